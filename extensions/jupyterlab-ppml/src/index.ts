/**
 * jupyterlab-ppml: verifies a PPML kernel's enclave in this browser before anything
 * leaves it, proves this browser's owner key, seals the whole notebook conversation
 * (code, outputs, completions, input(), widgets) end to end, stores sealed notebooks'
 * outputs encrypted, shows the verdict, and sends secrets end-to-end encrypted.
 * Works in JupyterLab 4 and Notebook 7 (the notebook toolbar badge; the status bar
 * item where a status bar exists).
 */

import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Dialog, ICommandPalette, MainAreaWidget, Notification } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';

import { Contents, Kernel } from '@jupyterlab/services';

import { AttestationHost, AttestationManager, KernelAttestation } from './attestation';
import { openNotebook, sealNotebook } from './atrest';
import { b64encode } from './dcap/bytes';
import { parsePolicy } from './dcap/policy';
import { PolicyState } from './dcap/policyState';
import { notebookKey, ownerKey } from './keystore';
import { SealingGate } from './sealing';
import { approveSimulatedDialog, grantDialog, ownerKeyDialog, ReportPanel, secretDialog, StatusBadge, unsolicitedSecretDialog } from './ui';

const PLUGIN_ID = 'jupyterlab-ppml:plugin';
const CATEGORY = 'PPML';
const NAME_RE = /^[A-Za-z_][A-Za-z0-9_.-]{0,63}$/;

namespace CommandIDs {
  export const showReport = 'ppml:show-report';
  export const sendSecret = 'ppml:send-secret';
  export const reverify = 'ppml:reverify';
  export const importReference = 'ppml:import-reference-values';
  export const showOwnerKey = 'ppml:show-owner-key';
  export const grantOwner = 'ppml:grant-owner';
  export const forgetSimulated = 'ppml:forget-simulated-roots';
}

const SIMULATED_ROOTS_KEY = 'jupyterlab-ppml:allowed-simulated-roots';

/** Simulated roots this browser's user allowed (explicit, revocable; still labelled SIMULATED). */
function allowedSimulatedRoots(): string[] {
  try {
    const v = JSON.parse(localStorage.getItem(SIMULATED_ROOTS_KEY) ?? '[]');
    return Array.isArray(v) ? v.filter(x => typeof x === 'string' && /^[0-9a-f]{64}$/.test(x)) : [];
  } catch (e) {
    return [];
  }
}

function setAllowedSimulatedRoots(roots: string[]): void {
  try {
    localStorage.setItem(SIMULATED_ROOTS_KEY, JSON.stringify(roots));
  } catch (e) {
    // storage unavailable: the decision lasts until the page is reloaded
  }
}

/**
 * Find every kernel connection as it is created: wrap the kernel manager's `connectTo`
 * (SessionContext, consoles and `startNew` all go through it) and install the sealing
 * gate synchronously, before the connection's WebSocket can deliver or send anything
 * (see sealing.ts for why the gate sits on the connection's send/handle methods).
 */
function watchConnections(app: JupyterFrontEnd, onConnection: (kc: Kernel.IKernelConnection) => void): void {
  const kernels = app.serviceManager.kernels as Kernel.IManager & { __ppmlWrapped?: boolean };
  if (kernels.__ppmlWrapped) {
    return;
  }
  kernels.__ppmlWrapped = true;
  const connectTo = kernels.connectTo.bind(kernels);
  kernels.connectTo = (options: Omit<Kernel.IKernelConnection.IOptions, 'serverSettings'>) => {
    const kc = connectTo(options);
    try {
      SealingGate.install(kc);
      onConnection(kc);
    } catch (e) {
      console.error('jupyterlab-ppml: could not watch a kernel connection', e);
    }
    return kc;
  };
}

function pickJsonFile(): Promise<string | null> {
  return new Promise(resolve => {
    const input = document.createElement('input');
    input.type = 'file';
    input.accept = '.json,application/json';
    input.onchange = () => {
      const file = input.files?.[0];
      if (!file) {
        resolve(null);
        return;
      }
      file.text().then(resolve, () => resolve(null));
    };
    input.click();
  });
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Browser-side attestation of PPML kernels and end-to-end encrypted secrets.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [IStatusBar, ICommandPalette, ISettingRegistry],
  activate: async (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    statusBar: IStatusBar | null,
    palette: ICommandPalette | null,
    settingRegistry: ISettingRegistry | null
  ) => {
    // First, before any await: every kernel connection gets its sealing gate at once
    // (holding what must be sealed); attestation starts once the manager exists below.
    const early: Kernel.IKernelConnection[] = [];
    let onConnection = (kc: Kernel.IKernelConnection): void => {
      early.push(kc);
    };
    watchConnections(app, kc => onConnection(kc));
    // Fail closed: while the policy setting is invalid or unreadable, policyState.current()
    // throws and every enclave is refused (red badge naming the setting and the problem).
    const policyState = new PolicyState();
    let settings: ISettingRegistry.ISettings | null = null;
    if (settingRegistry) {
      try {
        const loaded = await settingRegistry.load(PLUGIN_ID);
        settings = loaded;
        policyState.fromSettings(loaded.composite as Record<string, unknown>);
        loaded.changed.connect(() => policyState.fromSettings(loaded.composite as Record<string, unknown>));
      } catch (e) {
        policyState.loadFailed(e);
      }
    }
    if (policyState.problem) {
      Notification.error(policyState.problem, { autoClose: false });
    }

    // One approval dialog per simulated root at a time (several tabs may ask together).
    const approvals = new Map<string, Promise<boolean>>();
    const host: AttestationHost = {
      policy: () => policyState.current(),
      approveSimulated: async (approval, stillCurrent) => {
        policyState.current(); // an unusable policy refuses before anyone is asked
        if (allowedSimulatedRoots().includes(approval.rootSha256)) {
          return true;
        }
        let pending = approvals.get(approval.rootSha256);
        if (!pending) {
          const { dialog, result } = approveSimulatedDialog(approval);
          // The dialog belongs to this attestation generation: a restart or re-attestation closes it.
          const watch = setInterval(() => {
            if (!stillCurrent()) {
              dialog.reject();
            }
          }, 250);
          pending = result.then(ok => {
            clearInterval(watch);
            approvals.delete(approval.rootSha256);
            if (ok && stillCurrent()) {
              setAllowedSimulatedRoots([...new Set([...allowedSimulatedRoots(), approval.rootSha256])]);
            }
            return ok && stillCurrent();
          });
          approvals.set(approval.rootSha256, pending);
        }
        const ok = await pending;
        return ok || allowedSimulatedRoots().includes(approval.rootSha256);
      },
      notify: (kind, message) => {
        Notification[kind](message, { autoClose: kind === 'error' ? false : 5000 });
      },
      ownerKey,
      kernelspecSaysPpml: name => {
        const spec = app.serviceManager.kernelspecs.specs?.kernelspecs[name];
        if (!spec) {
          return false;
        }
        return (spec.argv ?? []).some(a => /ppml_kernel|ppml-kernel/.test(a)) || 'PPML_TEE' in ((spec as any).env ?? {}) || !!(spec.metadata as any)?.ppml;
      }
    };
    const manager = new AttestationManager(host);
    onConnection = kc => manager.attach(kc);
    early.splice(0).forEach(kc => manager.attach(kc));

    const current = (): KernelAttestation | undefined => manager.get(tracker.currentWidget?.sessionContext.session?.kernel);
    // A changed policy (valid or not) applies at once: verify every open PPML kernel again.
    policyState.onChange(() => {
      if (policyState.problem) {
        Notification.error(policyState.problem, { autoClose: false });
      }
      // Every PPML connection (notebooks, consoles, other tabs' connections in this window).
      manager.all().filter(a => a.state.phase !== 'not-ppml').forEach(a => void a.attest());
    });

    // Notebooks at rest: sealed notebooks' outputs are stored encrypted (docs/protocol.md 7).
    const contents = app.serviceManager.contents as Contents.IManager;
    const isSealedNotebook = (path: string, nb: any): boolean => {
      let found = false;
      tracker.forEach(panel => {
        if (panel.context.path === path) {
          const att = manager.get(panel.sessionContext.session?.kernel);
          if (att && att.state.phase !== 'not-ppml') {
            found = true;
          }
        }
      });
      return found || host.kernelspecSaysPpml(String(nb?.metadata?.kernelspec?.name ?? ''));
    };
    const save = contents.save.bind(contents);
    contents.save = async (path: string, options: Partial<Contents.IModel> = {}) => {
      if (options.type === 'notebook' && options.content && isSealedNotebook(path, options.content)) {
        // Fail closed: without the key the notebook is not saved (never saved in the clear).
        const key = await notebookKey();
        const sealSources = settings?.composite.sealCellSources === true;
        options = { ...options, content: await sealNotebook(options.content as any, key, sealSources) };
      }
      return save(path, options);
    };
    const get = contents.get.bind(contents);
    contents.get = async (path: string, options?: Contents.IFetchOptions) => {
      const model = await get(path, options);
      if (model.type === 'notebook' && model.content && Array.isArray(model.content.cells)) {
        let key = null;
        try {
          key = await notebookKey();
        } catch (e) {
          console.warn('jupyterlab-ppml: notebook key unavailable; sealed outputs stay sealed', e);
        }
        const problems: string[] = [];
        const content = await openNotebook(model.content, key, problems);
        if (problems.length) {
          Notification.warning(`PPML: ${path}: ${problems.length} sealed cell(s) could not be opened: ${problems.slice(0, 3).join('; ')}`);
        }
        return { ...model, content };
      }
      return model;
    };

    // Report panel (one, following the active notebook while open).
    let report: MainAreaWidget<ReportPanel> | null = null;
    const showReport = (): void => {
      if (!report || report.isDisposed) {
        report = new MainAreaWidget({ content: new ReportPanel() });
        report.id = 'ppml-attestation-report-area';
        report.title.label = 'PPML attestation';
        report.title.closable = true;
      }
      report.content.follow(current());
      if (!report.isAttached) {
        // JupyterLab: next to the notebook; Notebook 7 has one main widget: use the right panel.
        if (app.name === 'JupyterLab') {
          app.shell.add(report, 'main', { mode: 'split-right' });
        } else {
          app.shell.add(report, 'right', { rank: 1000 });
        }
      }
      app.shell.activateById(report.id);
    };

    // Status bar item (JupyterLab).
    const statusBadge = new StatusBadge(showReport);
    if (statusBar) {
      statusBar.registerStatusItem('jupyterlab-ppml:status', {
        item: statusBadge,
        align: 'left',
        rank: 5,
        isActive: () => true
      });
    }
    const refresh = (): void => {
      const att = current();
      statusBadge.follow(att);
      if (report && !report.isDisposed) {
        report.content.follow(att);
      }
    };
    tracker.currentChanged.connect(refresh);
    manager.changed.connect(refresh);
    // Attach connections made before this plugin wrapped the kernel manager.
    tracker.forEach(panel => {
      const kc = panel.sessionContext.session?.kernel;
      if (kc) {
        manager.attach(kc);
      }
    });

    // Toolbar badge per notebook (also where there is no status bar, e.g. Notebook 7).
    const watch = (panel: NotebookPanel): void => {
      const badge = new StatusBadge(() => {
        void app.commands.execute(CommandIDs.showReport);
      });
      panel.toolbar.insertItem(10, 'ppml-attestation', badge);
      const attach = (): void => {
        badge.follow(manager.get(panel.sessionContext.session?.kernel));
        refresh();
      };
      panel.sessionContext.kernelChanged.connect(attach);
      void panel.sessionContext.ready.then(attach);
    };
    tracker.forEach(watch);
    tracker.widgetAdded.connect((_, panel) => watch(panel));

    // Dialogs, keyed by attestation (connection), generation and request: a restart or
    // re-attestation closes those of the old session; one kernel cannot close another's.
    const open = new Map<string, { dialog: Dialog<any>; attestation: KernelAttestation; generation: number }>();
    const dialogKey = (att: KernelAttestation, generation: number, id: string): string => `${att.key}:${generation}:${id}`;
    manager.secretRequested.connect(async (_, { attestation, request }) => {
      const key = dialogKey(attestation, request.generation, request.requestId);
      const { dialog, result } = secretDialog(attestation, request);
      open.set(key, { dialog, attestation, generation: request.generation });
      const timer = setTimeout(() => dialog.reject(), Math.max(1, request.timeoutS) * 1000);
      const value = await result;
      clearTimeout(timer);
      const wasOpen = open.delete(key);
      if (request.generation !== attestation.generation) {
        if (value !== null) {
          Notification.error('PPML: the kernel restarted or was verified again while the dialog was open; the secret was not sent.');
        }
        return;
      }
      try {
        if (value !== null) {
          await attestation.sendSecret(request.generation, request.requestId, request.name, value);
        } else if (wasOpen) {
          await attestation.decline(request.generation, request.requestId, 'cancelled in the browser');
        }
      } catch (e) {
        Notification.error(`PPML: could not send the secret: ${(e as Error).message}`);
      }
    });
    manager.secretCancelled.connect((_, { attestation, requestId, generation }) => {
      const key = dialogKey(attestation, generation, requestId);
      const entry = open.get(key);
      if (entry) {
        open.delete(key);
        entry.dialog.reject();
      }
    });
    manager.invalidated.connect((_, { attestation, generation }) => {
      for (const [key, entry] of [...open.entries()]) {
        if (entry.attestation === attestation && entry.generation === generation) {
          open.delete(key);
          entry.dialog.reject();
        }
      }
    });

    app.commands.addCommand(CommandIDs.showReport, {
      label: 'PPML: Show the attestation report',
      execute: showReport
    });
    app.commands.addCommand(CommandIDs.reverify, {
      label: "PPML: Verify the kernel's enclave again",
      isEnabled: () => !!current(),
      execute: () => current()?.attest()
    });
    app.commands.addCommand(CommandIDs.sendSecret, {
      label: 'PPML: Send a secret to the kernel',
      isEnabled: () => !!current()?.ready,
      execute: async () => {
        const att = current();
        if (!att?.ready) {
          Notification.error("PPML: the active notebook's enclave is not verified; no secret was sent.");
          return;
        }
        const generation = att.generation;
        const { dialog, result } = unsolicitedSecretDialog(att);
        const key = dialogKey(att, generation, `unsolicited-${Date.now()}`);
        open.set(key, { dialog, attestation: att, generation });
        const input = await result;
        open.delete(key);
        if (!input) {
          return;
        }
        if (!NAME_RE.test(input.name)) {
          Notification.error('PPML: a secret name is letters, digits, _ . - (starting with a letter or _).');
          return;
        }
        try {
          await att.sendSecret(generation, null, input.name, input.value);
        } catch (e) {
          Notification.error(`PPML: could not send the secret: ${(e as Error).message}`);
        }
      }
    });
    app.commands.addCommand(CommandIDs.importReference, {
      label: 'PPML: Import reference values (expected measurements)',
      isEnabled: () => !!settings,
      execute: async () => {
        const text = await pickJsonFile();
        if (text === null || !settings) {
          return;
        }
        try {
          // The file replaces the whole policy (missing keys take the default policy).
          const parsed = parsePolicy(JSON.parse(text));
          await settings.set('policy', parsed as any);
          Notification.success('PPML: policy updated from the reference values; verifying again.');
        } catch (e) {
          Notification.error(`PPML: not a reference-values file: ${(e as Error).message}`);
        }
      }
    });
    app.commands.addCommand(CommandIDs.showOwnerKey, {
      label: "PPML: Show my owner key (this browser's)",
      execute: async () => {
        try {
          const key = await ownerKey();
          await ownerKeyDialog(key.fingerprint, b64encode(key.pub));
        } catch (e) {
          Notification.error(`PPML: this browser's owner key is unavailable: ${(e as Error).message}`);
        }
      }
    });
    app.commands.addCommand(CommandIDs.grantOwner, {
      label: 'PPML: Grant access to another owner key',
      isEnabled: () => !!current()?.ready,
      execute: async () => {
        const att = current();
        if (!att?.ready) {
          Notification.error("PPML: the active notebook's enclave is not verified; nothing was sent.");
          return;
        }
        const generation = att.generation;
        const { dialog, result } = grantDialog(att);
        const key = dialogKey(att, generation, `grant-${Date.now()}`);
        open.set(key, { dialog, attestation: att, generation });
        const input = await result;
        open.delete(key);
        if (!input) {
          return;
        }
        try {
          await att.grant(generation, input.key, input.label);
        } catch (e) {
          Notification.error(`PPML: the grant was not sent: ${(e as Error).message}`);
        }
      }
    });
    app.commands.addCommand(CommandIDs.forgetSimulated, {
      label: 'PPML: Forget allowed simulated roots',
      execute: () => {
        const n = allowedSimulatedRoots().length;
        setAllowedSimulatedRoots([]);
        Notification.info(`PPML: forgot ${n} allowed simulated root(s); simulated enclaves will be asked about again.`);
      }
    });
    if (palette) {
      for (const command of Object.values(CommandIDs)) {
        palette.addItem({ command, category: CATEGORY });
      }
    }
  }
};

export default plugin;
