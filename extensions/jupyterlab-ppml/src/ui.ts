/**
 * Widgets: the status badge (status bar and notebook toolbar), the report panel and the
 * dialogs (secret prompt, simulated-enclave approval, unsolicited secret).
 * Plain DOM with textContent everywhere: nothing from the kernel is ever parsed as HTML.
 */

import { Dialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { Approval, AttestationState, explainIntelError, KernelAttestation, Phase, SecretRequest } from './attestation';

const PHASE_CLASS: Record<Phase, string> = {
  'not-ppml': 'ppml-hidden',
  verifying: 'ppml-verifying',
  'needs-approval': 'ppml-simulated',
  verified: 'ppml-verified',
  simulated: 'ppml-simulated',
  failed: 'ppml-failed'
};

// Glyphs that a stock Debian Chromium draws with its only fonts (DejaVu): no emoji.
const PHASE_ICON: Record<Phase, string> = {
  'not-ppml': '',
  verifying: '…',
  'needs-approval': '⚠',
  verified: '✔',
  simulated: '⚠',
  failed: '✖'
};

function el<K extends keyof HTMLElementTagNameMap>(tag: K, text?: string, cls?: string): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (text !== undefined) {
    node.textContent = text;
  }
  if (cls) {
    node.className = cls;
  }
  return node;
}

/** A widget that shows one kernel's attestation and re-renders when its state changes. */
abstract class AttestationView extends Widget {
  protected attestation: KernelAttestation | undefined;

  follow(attestation: KernelAttestation | undefined): void {
    if (this.attestation !== attestation) {
      this.attestation?.stateChanged.disconnect(this.render, this);
      this.attestation = attestation;
      this.attestation?.stateChanged.connect(this.render, this);
    }
    this.render();
  }

  protected abstract render(): void;
}

/** The one-line badge; follows whatever attestation it is given. */
export class StatusBadge extends AttestationView {
  constructor(private readonly onOpen: () => void) {
    super();
    this.addClass('ppml-status');
    this.node.setAttribute('role', 'button');
    this.node.setAttribute('data-ppml-phase', 'none');
    this.node.addEventListener('click', () => this.onOpen());
    this.follow(undefined);
  }

  protected render(): void {
    const state = this.attestation?.state;
    const phase: Phase = state?.phase ?? 'not-ppml';
    this.node.className = `lm-Widget ppml-status ${PHASE_CLASS[phase]}`;
    this.node.setAttribute('data-ppml-phase', state ? phase : 'none');
    const message = state?.message ?? '';
    const short = message.length > 90 ? `${message.slice(0, 87)}…` : message;
    this.node.textContent = state && phase !== 'not-ppml' ? `${PHASE_ICON[phase]} PPML: ${short}` : '';
    this.node.title = state && phase !== 'not-ppml' ? `${message}\nClick for the full attestation report.` : '';
  }
}

function row(table: HTMLTableElement, key: string, value: string, cls?: string): void {
  const tr = el('tr', undefined, cls);
  tr.appendChild(el('th', key));
  const td = el('td');
  td.appendChild(el('code', value));
  tr.appendChild(td);
  table.appendChild(tr);
}

/** The full report for one kernel's attestation. */
export class ReportPanel extends AttestationView {
  constructor() {
    super();
    this.id = 'ppml-attestation-report';
    this.title.label = 'PPML attestation';
    this.title.closable = true;
    this.addClass('ppml-report');
    this.follow(undefined);
  }

  protected render(): void {
    const node = this.node;
    node.textContent = '';
    const state: AttestationState | undefined = this.attestation?.state;
    if (!state || state.phase === 'not-ppml') {
      node.appendChild(el('p', 'The active notebook does not run on a PPML kernel.'));
      return;
    }
    const banner = el('div', `${PHASE_ICON[state.phase]} ${state.message}`, `ppml-banner ${PHASE_CLASS[state.phase]}`);
    banner.setAttribute('data-ppml-phase', state.phase);
    node.appendChild(banner);
    if (state.phase === 'simulated' || state.phase === 'needs-approval') {
      node.appendChild(
        el(
          'p',
          'SIMULATED: this quote verifies only against a root that is not Intel\'s. A simulated enclave protects nothing; ' +
            'the host can read everything the kernel holds. Use it for teaching, demos and tests only.',
          'ppml-warning'
        )
      );
    }
    const r = state.report;
    const general = el('table', undefined, 'ppml-table');
    row(general, 'Kernel', this.attestation!.kernel.id);
    if (state.sessionId) {
      row(general, 'Session', state.sessionId);
    }
    if (state.sealedMode) {
      row(general, 'Sealed mode', state.sealedMode.on ? `sealed${state.sealedMode.required ? ' (required)' : ''}${state.sealedMode.reason ? `: ${state.sealedMode.reason}` : ''}` : `not sealed${state.sealedMode.reason ? `: ${state.sealedMode.reason}` : ''} (this tab's own messages are sealed; the kernel also accepts unsealed requests)`, state.sealedMode.on ? 'ppml-sealed' : 'ppml-not-sealed');
    }
    if (state.ownerFingerprint) {
      row(general, 'This browser\'s owner key', state.ownerFingerprint);
    }
    if (state.owners) {
      row(general, 'Kernel owners', state.owners.map(o => `${o.fingerprint}${o.label ? ` (${o.label})` : ''}`).join('; ') + (state.claimed ? ' — claimed by this tab' : ''));
    }
    const gate = this.attestation!.gate.counts;
    row(general, 'Sealed messages (sent / opened / refused locally / dropped)', `${gate.sealed} / ${gate.opened} / ${gate.refusedLocally} / ${gate.dropped}`);
    if (r) {
      row(general, 'TEE', r.tee);
      row(general, 'TCB status', r.status);
      row(general, 'Advisories', r.advisoryIds.join(', ') || 'none');
      row(general, 'Platform / QE status', `${r.platformStatus.status} / ${r.qeStatus.status}`);
      row(general, 'FMSPC', r.fmspc);
      row(general, 'Trust anchor', `${r.intelRoot ? "Intel SGX Root CA" : 'SIMULATED root'} (SHA-256 ${r.rootSha256})`);
      row(general, 'Verified at', new Date(r.verifiedAt * 1000).toISOString());
    }
    if (state.verifyMs !== undefined) {
      row(general, 'Verification time in this browser', `${state.verifyMs.toFixed(1)} ms`);
    }
    const t = state.evidence?.timings;
    if (t) {
      row(general, 'Kernel: quote / handshake', `${t.quote_ms ?? '?'} ms / ${t.handshake_ms ?? '?'} ms`);
    }
    if (state.evidence) {
      row(general, 'Attester', `${String(state.evidence.tee.kind ?? '?')}: ${String(state.evidence.tee.description ?? '')}`);
    }
    if (state.intelError) {
      row(general, 'Intel root', `rejected: ${state.intelError}`);
    }
    node.appendChild(el('h3', 'Attestation'));
    node.appendChild(general);
    if (state.policy) {
      node.appendChild(el('h3', 'Policy'));
      const table = el('table', undefined, 'ppml-table ppml-policy');
      const head = el('tr');
      ['Check', 'Expected', 'Actual', ''].forEach(h => head.appendChild(el('th', h)));
      table.appendChild(head);
      for (const c of state.policy.checks) {
        const tr = el('tr', undefined, c.ok ? 'ppml-ok' : 'ppml-mismatch');
        tr.appendChild(el('th', c.field));
        tr.appendChild(el('td', c.expected));
        tr.appendChild(el('td', c.actual));
        tr.appendChild(el('td', c.ok ? '✔' : '✖ mismatch'));
        table.appendChild(tr);
      }
      node.appendChild(table);
    }
    if (r) {
      node.appendChild(el('h3', 'Measurements'));
      const table = el('table', undefined, 'ppml-table');
      for (const [k, v] of Object.entries(r.measurements)) {
        row(table, k, String(v));
      }
      node.appendChild(table);
    }
    if (state.errors.length) {
      node.appendChild(el('h3', 'Rejected channel messages'));
      const list = el('ul');
      state.errors.forEach(e => list.appendChild(el('li', e)));
      node.appendChild(list);
    }
  }
}

/**
 * Dialog body: an optional warning, explanatory lines, then inputs; the secret leaves only
 * through getValue(), which empties the password field (so does dispose, on cancel).
 */
abstract class SecretForm<T> extends Widget implements Dialog.IBodyWidget<T> {
  protected readonly valueInput: HTMLInputElement = el('input');

  constructor(lines: string[], warning?: string) {
    super();
    this.addClass('ppml-secret-body');
    if (warning) {
      this.node.appendChild(el('p', warning, 'ppml-warning'));
    }
    lines.forEach(l => this.node.appendChild(el('p', l)));
    this.valueInput.type = 'password';
    this.valueInput.autocomplete = 'off';
    this.valueInput.spellcheck = false;
    this.valueInput.className = 'jp-mod-styled ppml-secret-input';
    this.valueInput.setAttribute('aria-label', 'secret value');
  }

  abstract getValue(): T;

  /** The typed secret, removed from the page. */
  protected takeValue(): string {
    const v = this.valueInput.value;
    this.valueInput.value = '';
    return v;
  }

  dispose(): void {
    this.valueInput.value = '';
    super.dispose();
  }
}

/** The value for a secret the kernel asked for by name. */
class SecretBody extends SecretForm<string> {
  constructor(lines: string[], warning?: string) {
    super(lines, warning);
    this.node.appendChild(this.valueInput);
  }

  getValue(): string {
    return this.takeValue();
  }

  protected onAfterAttach(): void {
    this.valueInput.focus();
  }
}

function trustLine(att: KernelAttestation): [string, string | undefined] {
  const s = att.state;
  if (s.phase === 'simulated') {
    return ['The channel ends in a SIMULATED enclave.', 'SIMULATED enclave: NOT CONFIDENTIAL. The host can read this secret.'];
  }
  return [`The channel ends in the verified enclave (${s.message}).`, undefined];
}

/** Ask for a secret the kernel requested. Resolves to the value, or null if cancelled. */
export function secretDialog(att: KernelAttestation, request: SecretRequest): { dialog: Dialog<string>; result: Promise<string | null> } {
  const [line, warning] = trustLine(att);
  const body = new SecretBody(
    [request.prompt || `The kernel asks for the secret '${request.name}'.`, `Name: ${request.name}`, line, 'It is encrypted in this browser and readable only inside the enclave.'],
    warning
  );
  const dialog = new Dialog<string>({
    title: `PPML secret: ${request.name}`,
    body,
    buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Send encrypted' })],
    focusNodeSelector: 'input'
  });
  dialog.addClass('ppml-secret-dialog');
  const result = dialog.launch().then(r => (r.button.accept && r.value !== null ? r.value : null));
  return { dialog, result };
}

/** A name and a value, for a secret the user sends unasked. */
class UnsolicitedBody extends SecretForm<{ name: string; value: string }> {
  private nameInput: HTMLInputElement = el('input');

  constructor(lines: string[], warning?: string) {
    super(lines, warning);
    this.nameInput.placeholder = 'name, e.g. db_password';
    this.nameInput.className = 'jp-mod-styled ppml-secret-name';
    this.valueInput.placeholder = 'value';
    this.node.appendChild(this.nameInput);
    this.node.appendChild(this.valueInput);
  }

  getValue(): { name: string; value: string } {
    return { name: this.nameInput.value.trim(), value: this.takeValue() };
  }
}

export function unsolicitedSecretDialog(att: KernelAttestation): { dialog: Dialog<{ name: string; value: string }>; result: Promise<{ name: string; value: string } | null> } {
  const [line, warning] = trustLine(att);
  const dialog = new Dialog({
    title: 'PPML: send a secret to the kernel',
    body: new UnsolicitedBody([line, "The kernel keeps it in memory; read it with ppml_kernel.secrets.get('name')."], warning),
    buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Send encrypted' })]
  });
  return { dialog, result: dialog.launch().then(r => (r.button.accept && r.value ? r.value : null)) };
}

export function approveSimulatedDialog(approval: Approval): { dialog: Dialog<unknown>; result: Promise<boolean> } {
  const body = new Widget();
  body.addClass('ppml-secret-body');
  body.node.appendChild(el('p', 'This kernel runs in a SIMULATED enclave. It is NOT confidential: the host, the server and anyone relaying messages may read every secret you send to it.', 'ppml-warning'));
  body.node.appendChild(el('p', `Why: ${explainIntelError(approval.intelError)}`));
  body.node.appendChild(el('p', `Its quote verifies against that simulated root (SHA-256 ${approval.rootSha256.slice(0, 16)}…, status ${approval.report.status}).`));
  body.node.appendChild(el('p', 'If you allow it, this browser remembers this simulated root (command "PPML: Forget allowed simulated roots" revokes it), and every PPML surface keeps saying SIMULATED.'));
  const details = el('details');
  details.appendChild(el('summary', 'Technical detail'));
  details.appendChild(el('code', `Intel root: ${approval.intelError}; simulated root SHA-256 ${approval.rootSha256}`));
  body.node.appendChild(details);
  const dialog = new Dialog({
    title: 'Allow a SIMULATED enclave?',
    body,
    buttons: [Dialog.cancelButton({ label: 'Keep refusing' }), Dialog.warnButton({ label: 'Allow SIMULATED enclave' })]
  });
  return { dialog, result: dialog.launch().then(r => r.button.accept) };
}

/** Show this browser's owner key (to grant it access from another browser). */
export async function ownerKeyDialog(fingerprint: string, pubB64: string): Promise<void> {
  const body = new Widget();
  body.addClass('ppml-secret-body');
  body.node.appendChild(el('p', `Fingerprint: ${fingerprint}`));
  body.node.appendChild(el('p', 'To use a kernel that another browser owns, its owner runs "PPML: Grant access to another owner key" with this key:'));
  const area = el('textarea');
  area.readOnly = true;
  area.value = pubB64;
  area.className = 'jp-mod-styled ppml-owner-key';
  area.rows = 3;
  body.node.appendChild(area);
  const result = await new Dialog({
    title: "PPML: this browser's owner key",
    body,
    buttons: [Dialog.cancelButton({ label: 'Close' }), Dialog.okButton({ label: 'Copy' })]
  }).launch();
  if (result.button.accept) {
    await navigator.clipboard?.writeText(pubB64).catch(() => undefined);
  }
}

class GrantBody extends Widget implements Dialog.IBodyWidget<{ key: string; label: string }> {
  private keyInput = el('textarea');
  private labelInput = el('input');
  constructor(line: string) {
    super();
    this.addClass('ppml-secret-body');
    this.node.appendChild(el('p', line));
    this.keyInput.placeholder = 'owner key (base64, from "PPML: Show my owner key" in the other browser)';
    this.keyInput.className = 'jp-mod-styled ppml-grant-key';
    this.keyInput.rows = 3;
    this.labelInput.placeholder = 'label, e.g. "alice laptop"';
    this.labelInput.className = 'jp-mod-styled ppml-grant-label';
    this.node.appendChild(this.keyInput);
    this.node.appendChild(this.labelInput);
  }
  getValue(): { key: string; label: string } {
    return { key: this.keyInput.value.trim(), label: this.labelInput.value.trim() };
  }
}

export function grantDialog(att: KernelAttestation): { dialog: Dialog<{ key: string; label: string }>; result: Promise<{ key: string; label: string } | null> } {
  const dialog = new Dialog({
    title: 'PPML: grant access to another owner key',
    body: new GrantBody(`The key may then use kernel ${att.kernel.id} (${att.state.message}) like this browser: run code, send secrets, grant others.`),
    buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Grant access' })]
  });
  return { dialog, result: dialog.launch().then(r => (r.button.accept && r.value ? r.value : null)) };
}
