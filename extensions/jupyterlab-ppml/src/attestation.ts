/**
 * Per-kernel attestation: runs the ppml-attest/1 handshake over a kernel connection,
 * verifies the quote in this browser, applies the policy, keeps the sealed session,
 * re-attests after restarts and relays secret requests to the UI.
 *
 * Browser -> kernel messages go on the control channel (docs/protocol.md, section 2),
 * kernel -> browser messages arrive as comm messages for the comm created here.
 */

import { Kernel, KernelMessage } from '@jupyterlab/services';
import { UUID } from '@lumino/coreutils';
import { ISignal, Signal } from '@lumino/signaling';

import { BrowserSession, Evidence, Inner, parseEvidence, ProtocolError } from './channel/session';
import { equal, hex } from './dcap/bytes';
import { checkPolicy, Policy, PolicyResult } from './dcap/policy';
import { parseCertificate, pemBlocks } from './dcap/x509';
import { sha256, VerifiedReport, verifyQuote } from './dcap/verify';

export const TARGET_NAME = 'ppml.attest/1';
const EVIDENCE_TIMEOUT_MS = 120_000;

export type Phase = 'not-ppml' | 'verifying' | 'needs-approval' | 'verified' | 'simulated' | 'failed';

export interface AttestationState {
  phase: Phase;
  /** One line for the status bar. */
  message: string;
  report?: VerifiedReport;
  policy?: PolicyResult;
  evidence?: Evidence;
  intelError?: string;
  simulatedRootSha256?: string;
  sessionId?: string;
  verifyMs?: number;
  errors: string[];
  updated: number;
}

export interface SecretRequest {
  requestId: string;
  name: string;
  prompt: string;
  timeoutS: number;
}

export interface Approval {
  kernelId: string;
  rootSha256: string;
  report: VerifiedReport;
  intelError: string;
}

/** Decisions the UI makes for the attestation (dialogs). */
export interface AttestationHost {
  policy(): Policy;
  /** Whether the user allows this simulated root for this kernel (asks if needed). */
  approveSimulated(approval: Approval): Promise<boolean>;
  notify(kind: 'error' | 'warning' | 'info' | 'success', message: string): void;
}

function shortHex(value: unknown): string {
  return String(value ?? '').slice(0, 8);
}

/** The self-signed certificate at the end of the collateral's TCB Info chain (a root candidate). */
function chainRoot(collateral: string): Uint8Array | undefined {
  try {
    const blocks = pemBlocks(JSON.parse(collateral).tcb_info_issuer_chain);
    const last = blocks[blocks.length - 1];
    const cert = parseCertificate(last);
    return equal(cert.subject, cert.issuer) ? last : undefined;
  } catch (e) {
    return undefined;
  }
}

export class KernelAttestation {
  private _state: AttestationState = { phase: 'verifying', message: 'verifying…', errors: [], updated: Date.now() };
  private _stateChanged = new Signal<this, AttestationState>(this);
  private _secretRequested = new Signal<this, SecretRequest>(this);
  private _secretCancelled = new Signal<this, string>(this);
  private session: BrowserSession | null = null;
  private comm: Kernel.IComm | null = null;
  private generation = 0;
  private waitingForIdle = false;
  private disposed = false;

  constructor(
    readonly kernel: Kernel.IKernelConnection,
    private readonly host: AttestationHost
  ) {
    kernel.statusChanged.connect(this.onStatus, this);
  }

  get state(): AttestationState {
    return this._state;
  }

  get stateChanged(): ISignal<this, AttestationState> {
    return this._stateChanged;
  }

  get secretRequested(): ISignal<this, SecretRequest> {
    return this._secretRequested;
  }

  get secretCancelled(): ISignal<this, string> {
    return this._secretCancelled;
  }

  get ready(): boolean {
    return (this._state.phase === 'verified' || this._state.phase === 'simulated') && this.session !== null;
  }

  dispose(): void {
    this.disposed = true;
    this.kernel.statusChanged.disconnect(this.onStatus, this);
    this.closeComm();
  }

  private set(patch: Partial<AttestationState>): void {
    this._state = { ...this._state, ...patch, updated: Date.now() };
    this._stateChanged.emit(this._state);
  }

  private logError(message: string): void {
    this.set({ errors: [...this._state.errors.slice(-19), `${new Date().toISOString()} ${message}`] });
  }

  private onStatus(_: Kernel.IKernelConnection, status: KernelMessage.Status): void {
    if (status === 'restarting' || status === 'autorestarting') {
      this.closeComm();
      this.waitingForIdle = true;
      this.set({ phase: 'verifying', message: 'kernel restarting: will verify the new enclave', report: undefined, policy: undefined });
    } else if (status === 'idle' && this.waitingForIdle) {
      this.waitingForIdle = false;
      void this.attest();
    } else if (status === 'dead') {
      this.closeComm();
      this.set({ phase: 'failed', message: 'kernel is dead' });
    }
  }

  private closeComm(): void {
    this.generation += 1;
    if (this.comm && !this.comm.isDisposed) {
      this.comm.dispose();
    }
    this.comm = null;
    this.session = null;
  }

  private sendControl(msgType: 'comm_open' | 'comm_msg' | 'comm_close', content: Record<string, unknown>): void {
    const msg = KernelMessage.createMessage({
      msgType: msgType as any,
      channel: 'control' as any,
      session: this.kernel.clientId,
      username: this.kernel.username,
      content: content as any
    });
    this.kernel.sendControlMessage(msg as any, false, true);
  }

  /** Run (or re-run) the handshake for this kernel. */
  async attest(): Promise<void> {
    this.closeComm();
    const generation = this.generation;
    this.set({
      phase: 'verifying',
      message: 'verifying the enclave…',
      report: undefined,
      policy: undefined,
      evidence: undefined,
      intelError: undefined,
      simulatedRootSha256: undefined,
      sessionId: undefined,
      verifyMs: undefined
    });
    let info: KernelMessage.IInfoReply;
    try {
      info = await this.kernel.info;
    } catch (e) {
      this.set({ phase: 'failed', message: 'kernel did not answer kernel_info' });
      return;
    }
    const ppml = (info as any).ppml;
    if (!String(info.implementation ?? '').startsWith('ppml') && !(ppml && ppml.protocol === 'ppml-attest/1')) {
      this.set({ phase: 'not-ppml', message: '' });
      return;
    }
    if (!globalThis.crypto?.subtle) {
      this.set({ phase: 'failed', message: 'this page is not a secure context (use https or localhost): WebCrypto is unavailable' });
      return;
    }
    const session = await BrowserSession.create();
    const commId = UUID.uuid4();
    const comm = this.kernel.createComm(TARGET_NAME, commId);
    this.comm = comm;
    const first = new Promise<unknown>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the kernel sent no evidence within 120 s')), EVIDENCE_TIMEOUT_MS);
      comm.onMsg = msg => {
        if (generation !== this.generation) {
          return;
        }
        const data = (msg.content as any).data;
        if (!this.session) {
          clearTimeout(timer);
          resolve(data);
        } else {
          void this.onChannelMessage(data);
        }
      };
      comm.onClose = () => {
        clearTimeout(timer);
        reject(new Error('the kernel closed the channel'));
      };
    });
    this.sendControl('comm_open', { comm_id: commId, target_name: TARGET_NAME, data: session.hello() });
    try {
      const data = await first;
      if (generation !== this.generation) {
        return;
      }
      await this.verify(session, data, generation);
    } catch (e) {
      if (generation === this.generation) {
        this.fail((e as Error).message);
      }
    }
  }

  private fail(reason: string, abort = true): void {
    if (abort && this.comm) {
      this.sendControl('comm_msg', { comm_id: this.comm.commId, data: { type: 'abort', reason } });
    }
    this.session = null;
    this.set({ phase: 'failed', message: reason });
  }

  private async verify(session: BrowserSession, data: unknown, generation: number): Promise<void> {
    const evidence = parseEvidence(data);
    this.set({ evidence });
    if (evidence.collateral === null) {
      throw new Error(`the kernel sent no collateral${evidence.collateralError ? ` (${evidence.collateralError})` : ''}`);
    }
    const now = Date.now() / 1000;
    const t0 = performance.now();
    let report: VerifiedReport | undefined;
    let intelError = '';
    try {
      report = await verifyQuote(evidence.quote, evidence.collateral, { now });
    } catch (e) {
      intelError = (e as Error).message;
    }
    let verifyMs = performance.now() - t0;
    let simulatedRoot: string | undefined;
    if (!report) {
      const root = chainRoot(evidence.collateral);
      if (!root) {
        throw new Error(intelError);
      }
      let candidate: VerifiedReport;
      try {
        candidate = await verifyQuote(evidence.quote, evidence.collateral, { now, rootDer: root });
      } catch (e) {
        throw new Error(intelError);
      }
      verifyMs = performance.now() - t0;
      simulatedRoot = hex(await sha256(root));
      this.set({ phase: 'needs-approval', message: 'SIMULATED enclave: waiting for your decision', report: candidate, intelError, simulatedRootSha256: simulatedRoot, verifyMs });
      const allowed = await this.host.approveSimulated({ kernelId: this.kernel.id, rootSha256: simulatedRoot, report: candidate, intelError });
      if (generation !== this.generation) {
        return;
      }
      if (!allowed) {
        throw new Error('simulated enclave not allowed for this kernel');
      }
      report = candidate;
    }
    await session.bind(evidence, report.quote.report.reportData);
    const policy = checkPolicy(report, this.host.policy());
    this.set({ report, policy, intelError: intelError || undefined, simulatedRootSha256: simulatedRoot, verifyMs });
    if (!policy.ok) {
      const short = (v: string): string => (v.length > 19 ? `${v.slice(0, 16)}…` : v);
      const bad = policy.checks.filter(c => !c.ok).map(c => `${c.field} ${short(c.actual)} (expected ${short(c.expected)})`);
      this.fail(`policy mismatch: ${bad.join('; ')}`);
      return;
    }
    this.session = session;
    const m = report.measurements;
    const verdict = {
      status: report.status,
      advisory_ids: report.advisoryIds,
      tee: report.tee,
      simulated: !report.intelRoot,
      ...(report.tee === 'SGX' ? { mrenclave: m.mrenclave } : { mrtd: m.mrtd }),
      root_sha256: report.rootSha256
    };
    const finished = await session.seal({ type: 'finished', verdict });
    this.sendControl('comm_msg', { comm_id: this.comm!.commId, data: finished });
    const label = report.tee === 'SGX' ? `MRENCLAVE ${shortHex(m.mrenclave)}` : `MRTD ${shortHex(m.mrtd)}`;
    if (report.intelRoot) {
      this.set({ phase: 'verified', message: `verified ${report.tee} · ${label} · ${report.status}` });
    } else {
      this.set({ phase: 'simulated', message: `SIMULATED ${report.tee} (not confidential) · ${label}` });
    }
  }

  private async onChannelMessage(data: any): Promise<void> {
    if (data && data.type === 'error') {
      const text = `kernel rejected a frame: ${data.code}: ${data.message}`;
      this.logError(text);
      this.host.notify('error', `PPML channel: ${text}`);
      return;
    }
    const session = this.session;
    if (!session) {
      return;
    }
    let inner: Inner;
    try {
      inner = await session.open(data);
    } catch (e) {
      const code = e instanceof ProtocolError ? e.code : 'error';
      const text = `rejected a frame from the kernel (${code}): ${(e as Error).message}`;
      this.logError(text);
      this.host.notify('error', `PPML channel: ${text}`);
      return;
    }
    switch (inner.type) {
      case 'ready':
        this.set({ sessionId: String(inner.session_id) });
        break;
      case 'secret_request':
        this._secretRequested.emit({
          requestId: String(inner.request_id),
          name: String(inner.name),
          prompt: String(inner.prompt ?? ''),
          timeoutS: Number(inner.timeout_s ?? 300)
        });
        break;
      case 'secret_cancel':
        this._secretCancelled.emit(String(inner.request_id));
        break;
      case 'secret_result':
        if (inner.ok) {
          this.host.notify('success', `Secret '${String(inner.name)}' is in the kernel's memory (sent end-to-end encrypted).`);
        } else {
          this.host.notify('error', `Secret '${String(inner.name)}' was not stored: ${String(inner.message ?? '')}`);
        }
        break;
    }
  }

  private async sendSealed(inner: Inner): Promise<void> {
    const session = this.session;
    const comm = this.comm;
    if (!session || !comm || !this.ready) {
      throw new Error('no verified channel to this kernel');
    }
    const frame = await session.seal(inner);
    this.sendControl('comm_msg', { comm_id: comm.commId, data: frame });
  }

  /** Send a secret (answering `requestId`, or unsolicited when null). */
  sendSecret(requestId: string | null, name: string, value: string): Promise<void> {
    return this.sendSealed({ type: 'secret', request_id: requestId, name, value });
  }

  decline(requestId: string, reason: string): Promise<void> {
    return this.sendSealed({ type: 'secret_decline', request_id: requestId, reason });
  }

  get isDisposed(): boolean {
    return this.disposed;
  }
}

/** All attestations of this browser window, keyed by kernel id. */
export class AttestationManager {
  private readonly byKernel = new Map<string, KernelAttestation>();
  private readonly allowedRoots = new Map<string, string>();
  private _changed = new Signal<this, KernelAttestation>(this);
  private _secretRequested = new Signal<this, { attestation: KernelAttestation; request: SecretRequest }>(this);
  private _secretCancelled = new Signal<this, { attestation: KernelAttestation; requestId: string }>(this);

  constructor(private readonly host: AttestationHost) {}

  get changed(): ISignal<this, KernelAttestation> {
    return this._changed;
  }

  get secretRequested(): ISignal<this, { attestation: KernelAttestation; request: SecretRequest }> {
    return this._secretRequested;
  }

  get secretCancelled(): ISignal<this, { attestation: KernelAttestation; requestId: string }> {
    return this._secretCancelled;
  }

  /**
   * Remember the user's decision to allow a simulated root for a kernel: for this tab
   * (sessionStorage, so a reload does not ask again; a new tab asks again).
   */
  allowSimulated(kernelId: string, rootSha256: string): void {
    this.allowedRoots.set(kernelId, rootSha256);
    try {
      sessionStorage.setItem(`ppml-simulated-root:${kernelId}`, rootSha256);
    } catch (e) {
      // storage unavailable: the decision lasts until the page is reloaded
    }
  }

  isSimulatedAllowed(kernelId: string, rootSha256: string): boolean {
    let stored: string | null = null;
    try {
      stored = sessionStorage.getItem(`ppml-simulated-root:${kernelId}`);
    } catch (e) {
      stored = null;
    }
    return (this.allowedRoots.get(kernelId) ?? stored) === rootSha256;
  }

  get(kernel: Kernel.IKernelConnection | null | undefined): KernelAttestation | undefined {
    if (!kernel) {
      return undefined;
    }
    const existing = this.byKernel.get(kernel.id);
    if (existing && !existing.isDisposed && !existing.kernel.isDisposed) {
      return existing;
    }
    const attestation = new KernelAttestation(kernel, this.host);
    this.byKernel.set(kernel.id, attestation);
    attestation.stateChanged.connect(() => this._changed.emit(attestation));
    attestation.secretRequested.connect((_, request) => this._secretRequested.emit({ attestation, request }));
    attestation.secretCancelled.connect((_, requestId) => this._secretCancelled.emit({ attestation, requestId }));
    kernel.disposed.connect(() => {
      attestation.dispose();
      if (this.byKernel.get(kernel.id) === attestation) {
        this.byKernel.delete(kernel.id);
      }
    });
    void attestation.attest();
    return attestation;
  }
}
