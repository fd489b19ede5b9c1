/**
 * jupyterlab-ppml: verifies a PPML kernel's enclave in this browser before any secret
 * leaves it, shows the verdict, and sends secrets end-to-end encrypted to the enclave.
 * Works in JupyterLab 4 and Notebook 7 (the notebook toolbar badge; the status bar
 * item where a status bar exists).
 */

import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Dialog, ICommandPalette, MainAreaWidget, Notification } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';

import { AttestationHost, AttestationManager, KernelAttestation } from './attestation';
import { parsePolicy } from './dcap/policy';
import { PolicyState } from './dcap/policyState';
import { approveSimulatedDialog, ReportPanel, secretDialog, StatusBadge, unsolicitedSecretDialog } from './ui';

const PLUGIN_ID = 'jupyterlab-ppml:plugin';
const CATEGORY = 'PPML';
const NAME_RE = /^[A-Za-z_][A-Za-z0-9_.-]{0,63}$/;

namespace CommandIDs {
  export const showReport = 'ppml:show-report';
  export const sendSecret = 'ppml:send-secret';
  export const reverify = 'ppml:reverify';
  export const importReference = 'ppml:import-reference-values';
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

    const host: AttestationHost = {
      policy: () => policyState.current(),
      // Called only once the manager below exists (from an attestation it started).
      approveSimulated: async approval => {
        policyState.current(); // an unusable policy refuses before anyone is asked
        if (manager.isSimulatedAllowed(approval.kernelId, approval.rootSha256)) {
          return true;
        }
        const ok = await approveSimulatedDialog(approval);
        if (ok) {
          manager.allowSimulated(approval.kernelId, approval.rootSha256);
        }
        return ok;
      },
      notify: (kind, message) => {
        Notification[kind](message, { autoClose: kind === 'error' ? false : 5000 });
      }
    };
    const manager = new AttestationManager(host);

    const current = (): KernelAttestation | undefined => manager.get(tracker.currentWidget?.sessionContext.session?.kernel);
    // A changed policy (valid or not) applies at once: verify every open PPML kernel again.
    policyState.onChange(() => {
      if (policyState.problem) {
        Notification.error(policyState.problem, { autoClose: false });
      }
      tracker.forEach(panel => void manager.get(panel.sessionContext.session?.kernel)?.attest());
    });

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

    // Secret requests from kernels: one dialog per request, closed when cancelled.
    const open = new Map<string, Dialog<string>>();
    manager.secretRequested.connect(async (_, { attestation, request }) => {
      const { dialog, result } = secretDialog(attestation, request);
      open.set(request.requestId, dialog);
      const timer = setTimeout(() => dialog.reject(), Math.max(1, request.timeoutS) * 1000);
      const value = await result;
      clearTimeout(timer);
      const wasOpen = open.delete(request.requestId);
      try {
        if (value !== null) {
          await attestation.sendSecret(request.requestId, request.name, value);
        } else if (wasOpen) {
          await attestation.decline(request.requestId, 'cancelled in the browser');
        }
      } catch (e) {
        Notification.error(`PPML: could not send the secret: ${(e as Error).message}`);
      }
    });
    manager.secretCancelled.connect((_, { requestId }) => {
      const dialog = open.get(requestId);
      if (dialog) {
        open.delete(requestId);
        dialog.reject();
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
        const input = await unsolicitedSecretDialog(att);
        if (!input) {
          return;
        }
        if (!NAME_RE.test(input.name)) {
          Notification.error('PPML: a secret name is letters, digits, _ . - (starting with a letter or _).');
          return;
        }
        try {
          await att.sendSecret(null, input.name, input.value);
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
    if (palette) {
      for (const command of Object.values(CommandIDs)) {
        palette.addItem({ command, category: CATEGORY });
      }
    }
  }
};

export default plugin;
