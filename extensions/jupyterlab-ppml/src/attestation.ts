/**
 * Per-connection attestation: runs the ppml-attest/2 handshake over one kernel
 * connection, verifies the quote in this browser, checks the owner list and the policy,
 * proves this browser's owner key, keeps the sealed session, drives the connection's
 * sealing gate (./sealing), re-attests after restarts and relays secret requests to the UI.
 *
 * One session per KernelConnection (a notebook, a console, each tab): every connection
 * receives every IOPub message, and each must open only its own (docs/protocol.md 6).
 *
 * Browser -> kernel attestation messages go on the control channel (section 2);
 * kernel -> browser ones arrive as IOPub comm messages, which the gate routes here.
 * Every await is followed by a check that the generation it started for is still
 * current; state changes only after every check passed; every failure ends red and named.
 */

import { Kernel, KernelMessage } from '@jupyterlab/services';
import { UUID } from '@lumino/coreutils';
import { ISignal, Signal } from '@lumino/signaling';

import { PROTOCOL } from './channel/crypto';
import { Envelope } from './channel/envelope';
import { BrowserSession, Evidence, Inner, parseEvidence, parseSealedMode, ProtocolError, SealedMode } from './channel/session';
import { b64decode, equal, hex } from './dcap/bytes';
import { checkPolicy, Policy, PolicyResult } from './dcap/policy';
import { parseCertificate, pemBlocks } from './dcap/x509';
import { sha256, VerifiedReport, verifyQuote } from './dcap/verify';
import { StoredOwnerKey } from './keystore';
import { SealingGate } from './sealing';

export const TARGET_NAME = 'ppml.attest/2';
const EVIDENCE_TIMEOUT_MS = 120_000;

export type Phase = 'not-ppml' | 'verifying' | 'needs-approval' | 'verified' | 'simulated' | 'failed';

export interface OwnerInfo {
  fingerprint: string;
  label: string;
}

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
  /** This browser's owner key fingerprint. */
  ownerFingerprint?: string;
  owners?: OwnerInfo[];
  claimed?: boolean;
  sealedMode?: SealedMode;
  errors: string[];
  updated: number;
}

export interface SecretRequest {
  requestId: string;
  name: string;
  prompt: string;
  timeoutS: number;
  /** The attestation generation and session the request arrived on. */
  generation: number;
  sessionId: string;
}

export interface Approval {
  kernelId: string;
  rootSha256: string;
  report: VerifiedReport;
  intelError: string;
}

/** Decisions the UI makes for the attestation (dialogs, settings, keys). */
export interface AttestationHost {
  policy(): Policy;
  /** Whether the user allows this simulated root (asks if needed). */
  approveSimulated(approval: Approval, stillCurrent: () => boolean): Promise<boolean>;
  notify(kind: 'error' | 'warning' | 'info' | 'success', message: string): void;
  ownerKey(): Promise<StoredOwnerKey>;
  /** Whether the kernelspec of this kernel says it is a PPML kernel (kernel_info must agree). */
  kernelspecSaysPpml(name: string): boolean;
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

/** Why a quote did not verify against Intel's root, in words a user can act on. */
export function explainIntelError(message: string): string {
  if (/root|anchor|chain|issuer|self-signed/i.test(message)) {
    return "Its certificates do not lead to Intel's SGX Root CA: they end in a different, self-made root. " +
      'That is what a simulated enclave (a laptop without SGX) looks like.';
  }
  return "It does not verify against Intel's SGX Root CA.";
}

class Stale extends Error {}

let attestationCounter = 0;

export class KernelAttestation {
  /** Unique per attestation object (dialogs are keyed by it, not by kernel id). */
  readonly key = `att${++attestationCounter}`;
  private _state: AttestationState = { phase: 'verifying', message: 'verifying…', errors: [], updated: Date.now() };
  private _stateChanged = new Signal<this, AttestationState>(this);
  private _secretRequested = new Signal<this, SecretRequest>(this);
  private _secretCancelled = new Signal<this, { requestId: string; generation: number }>(this);
  private _invalidated = new Signal<this, number>(this);
  private session: BrowserSession | null = null;
  private sessionReady = false;
  private commId: string | null = null;
  private evidenceWaiter: { generation: number; resolve: (d: unknown) => void; reject: (e: Error) => void } | null = null;
  private _generation = 0;
  private waitingForIdle = false;
  private lastResync = 0;
  private disposed = false;

  constructor(
    readonly kernel: Kernel.IKernelConnection,
    private readonly host: AttestationHost,
    readonly gate: SealingGate
  ) {
    kernel.statusChanged.connect(this.onStatus, this);
    gate.events = {
      rejected: text => this.rejected(text),
      attestationMessage: msg => this.onCommMessage(msg as unknown as KernelMessage.IMessage),
      isAttestationComm: commId => commId === this.commId,
      desync: () => {
        // At most once per 10 s, so a relay forging rejections cannot spin us.
        if (this.ready && Date.now() - this.lastResync > 10_000) {
          this.lastResync = Date.now();
          this.host.notify('warning', 'PPML: the kernel lost a sealed request; verifying the enclave again for a fresh sealed session.');
          void this.attest();
        }
      }
    };
  }

  get state(): AttestationState {
    return this._state;
  }

  get generation(): number {
    return this._generation;
  }

  get stateChanged(): ISignal<this, AttestationState> {
    return this._stateChanged;
  }

  get secretRequested(): ISignal<this, SecretRequest> {
    return this._secretRequested;
  }

  get secretCancelled(): ISignal<this, { requestId: string; generation: number }> {
    return this._secretCancelled;
  }

  /** Emitted with the old generation whenever a session ends (restart, re-attest, failure). */
  get invalidated(): ISignal<this, number> {
    return this._invalidated;
  }

  get ready(): boolean {
    return (this._state.phase === 'verified' || this._state.phase === 'simulated') && this.session !== null && this.sessionReady;
  }

  get isDisposed(): boolean {
    return this.disposed;
  }

  dispose(): void {
    if (this.disposed) {
      return;
    }
    this.disposed = true;
    this.kernel.statusChanged.disconnect(this.onStatus, this);
    this.endSession();
    Signal.clearData(this);
  }

  private set(patch: Partial<AttestationState>): void {
    this._state = { ...this._state, ...patch, updated: Date.now() };
    this._stateChanged.emit(this._state);
  }

  private logError(message: string): void {
    this.set({ errors: [...this._state.errors.slice(-19), `${new Date().toISOString()} ${message}`] });
  }

  private rejected(text: string): void {
    console.warn(`jupyterlab-ppml: ${text}`);
    this.logError(text);
    this.host.notify('error', `PPML channel: ${text}`);
  }

  private onStatus(_: Kernel.IKernelConnection, status: KernelMessage.Status): void {
    if (status === 'restarting' || status === 'autorestarting') {
      this.endSession();
      this.gate.hold(true);
      this.waitingForIdle = true;
      this.set({ phase: 'verifying', message: 'kernel restarting: will verify the new enclave', report: undefined, policy: undefined, sessionId: undefined, owners: undefined, sealedMode: undefined });
    } else if (status === 'idle' && this.waitingForIdle) {
      this.waitingForIdle = false;
      void this.attest();
    } else if (status === 'dead') {
      this.endSession();
      this.gate.fail('the kernel is dead');
      this.set({ phase: 'failed', message: 'kernel is dead' });
    }
  }

  /** End the current session: a new generation; anything bound to the old one is stale. */
  private endSession(): void {
    const old = this._generation;
    this._generation += 1;
    if (this.commId) {
      try {
        this.sendControl('comm_close', { comm_id: this.commId, data: {} });
      } catch (e) {
        // the connection is gone
      }
    }
    this.commId = null;
    this.session = null;
    this.sessionReady = false;
    this.evidenceWaiter?.reject(new Stale());
    this.evidenceWaiter = null;
    this._invalidated.emit(old);
  }

  private check(generation: number): void {
    if (generation !== this._generation || this.disposed) {
      throw new Stale();
    }
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

  /** Run (or re-run) the handshake on this connection. Never throws; failures end red. */
  async attest(): Promise<void> {
    this.endSession();
    const generation = this._generation;
    this.gate.hold();
    this.set({
      phase: 'verifying',
      message: 'verifying the enclave…',
      report: undefined,
      policy: undefined,
      evidence: undefined,
      intelError: undefined,
      simulatedRootSha256: undefined,
      sessionId: undefined,
      verifyMs: undefined,
      owners: undefined,
      claimed: undefined,
      sealedMode: undefined
    });
    try {
      await this.run(generation);
    } catch (e) {
      if (e instanceof Stale || generation !== this._generation) {
        return;
      }
      this.fail((e as Error).message || String(e));
    }
  }

  private async run(generation: number): Promise<void> {
    let info: KernelMessage.IInfoReply;
    try {
      info = await this.kernel.info;
    } catch (e) {
      throw new Error('kernel did not answer kernel_info');
    }
    this.check(generation);
    const ppml = (info as any).ppml;
    const saysPpml = String(info.implementation ?? '').startsWith('ppml') || (typeof ppml === 'object' && ppml !== null);
    if (!saysPpml) {
      if (this.host.kernelspecSaysPpml(this.kernel.name)) {
        throw new Error(`the kernelspec '${this.kernel.name}' says PPML but the kernel's kernel_info does not: not the PPML kernel, nothing sent`);
      }
      this.gate.plain();
      this.set({ phase: 'not-ppml', message: '' });
      return;
    }
    const protocol = typeof ppml === 'object' && ppml !== null ? String(ppml.protocol_version ?? ppml.protocol ?? '') : '';
    if (protocol !== PROTOCOL) {
      throw new Error(`the kernel speaks '${protocol || 'no protocol'}', this browser needs ${PROTOCOL}: nothing sent`);
    }
    if (!globalThis.crypto?.subtle) {
      throw new Error('this page is not a secure context (use https or localhost): WebCrypto is unavailable');
    }
    let owner: StoredOwnerKey;
    let session: BrowserSession;
    try {
      owner = await this.host.ownerKey();
      this.check(generation);
      session = await BrowserSession.create(owner);
    } catch (e) {
      if (e instanceof Stale) {
        throw e;
      }
      throw new Error(`WebCrypto/IndexedDB failed while preparing the handshake: ${(e as Error).message || e}`);
    }
    this.check(generation);
    this.set({ ownerFingerprint: owner.fingerprint });
    const commId = UUID.uuid4();
    const evidence = new Promise<unknown>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the kernel sent no evidence within 120 s')), EVIDENCE_TIMEOUT_MS);
      this.evidenceWaiter = {
        generation,
        resolve: d => {
          clearTimeout(timer);
          resolve(d);
        },
        reject: e => {
          clearTimeout(timer);
          reject(e);
        }
      };
    });
    this.commId = commId;
    this.sendControl('comm_open', { comm_id: commId, target_name: TARGET_NAME, data: session.hello() });
    const data = await evidence;
    this.check(generation);
    await this.verify(session, data, generation);
  }

  private fail(reason: string, abort = true): void {
    if (abort && this.commId) {
      try {
        this.sendControl('comm_msg', { comm_id: this.commId, data: { type: 'abort', reason } });
      } catch (e) {
        // the connection is gone; the kernel learns nothing, which is also safe
      }
    }
    console.warn(`jupyterlab-ppml: kernel ${this.kernel.id}: ${reason}`);
    this.endSession();
    this.gate.fail(reason);
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
    this.check(generation);
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
      this.check(generation);
      verifyMs = performance.now() - t0;
      simulatedRoot = hex(await sha256(root));
      this.check(generation);
      // Bind before asking: a quote that does not bind this handshake is refused without a dialog.
      await session.bind(evidence, candidate.quote.report.reportData);
      this.check(generation);
      this.set({ phase: 'needs-approval', message: 'SIMULATED enclave: waiting for your decision', report: candidate, intelError, simulatedRootSha256: simulatedRoot, verifyMs });
      const allowed = await this.host.approveSimulated(
        { kernelId: this.kernel.id, rootSha256: simulatedRoot, report: candidate, intelError },
        () => generation === this._generation && !this.disposed
      );
      this.check(generation);
      if (!allowed) {
        throw new Error('simulated enclave not allowed');
      }
      report = candidate;
    } else {
      await session.bind(evidence, report.quote.report.reportData);
      this.check(generation);
    }
    const policy = checkPolicy(report, this.host.policy());
    this.set({ report, policy, intelError: intelError || undefined, simulatedRootSha256: simulatedRoot, verifyMs });
    if (!policy.ok) {
      const short = (v: string): string => (v.length > 19 ? `${v.slice(0, 16)}…` : v);
      const bad = policy.checks.filter(c => !c.ok).map(c => `${c.field} ${short(c.actual)} (expected ${short(c.expected)})`);
      throw new Error(`policy mismatch: ${bad.join('; ')}`);
    }
    const m = report.measurements;
    const verdict = {
      status: report.status,
      advisory_ids: report.advisoryIds,
      tee: report.tee,
      simulated: !report.intelRoot,
      ...(report.tee === 'SGX' ? { mrenclave: m.mrenclave } : { mrtd: m.mrtd }),
      root_sha256: report.rootSha256
    };
    const finished = await session.finished(verdict);
    this.check(generation);
    this.session = session;
    this.sendControl('comm_msg', { comm_id: this.commId!, data: finished });
    this.set({ message: 'verified: waiting for the kernel to confirm the session…' });
  }

  private label(): string {
    const r = this._state.report!;
    const m = r.measurements;
    const measurement = r.tee === 'SGX' ? `MRENCLAVE ${shortHex(m.mrenclave)}` : `MRTD ${shortHex(m.mrtd)}`;
    const sealed = this._state.sealedMode?.on ? 'sealed' : 'not sealed';
    return r.intelRoot
      ? `verified ${r.tee} · ${measurement} · ${r.status} · ${sealed}`
      : `SIMULATED ${r.tee} (not confidential) · ${measurement} · ${sealed}`;
  }

  private onCommMessage(msg: KernelMessage.IMessage): void {
    const generation = this._generation;
    if (msg.header.msg_type === 'comm_close') {
      if (this.evidenceWaiter) {
        this.evidenceWaiter.reject(new Error('the kernel closed the channel'));
        this.evidenceWaiter = null;
      } else if (this.session) {
        this.fail('the kernel closed the channel', false);
      }
      return;
    }
    const data = (msg.content as any).data;
    if (this.evidenceWaiter && this.evidenceWaiter.generation === generation) {
      const w = this.evidenceWaiter;
      this.evidenceWaiter = null;
      w.resolve(data);
      return;
    }
    void this.onChannelMessage(data, generation);
  }

  private async onChannelMessage(data: any, generation: number): Promise<void> {
    if (data && data.type === 'error') {
      const code = String(data.code ?? '');
      const text = `kernel refused: ${code}: ${String(data.message ?? '')}`;
      if (code === 'not_owner' || !this.sessionReady) {
        // Before `ready` any error ends the handshake (e.g. claimed by someone else meanwhile).
        if (this.session) {
          this.fail(code === 'not_owner' ? `another party controls this kernel (${text})` : text, false);
        }
        return;
      }
      this.rejected(text);
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
      if (generation !== this._generation) {
        return;
      }
      const code = e instanceof ProtocolError ? e.code : 'error';
      this.rejected(`rejected a frame from the kernel (${code}): ${(e as Error).message}`);
      return;
    }
    if (generation !== this._generation) {
      return;
    }
    switch (inner.type) {
      case 'ready': {
        const owners = ((inner.owners ?? []) as OwnerInfo[]).map(o => ({ fingerprint: String(o.fingerprint), label: String(o.label ?? '') }));
        const sealedMode = inner.sealed_mode === undefined ? { on: false, required: false, reason: 'the kernel did not say' } : parseSealedMode(inner.sealed_mode);
        this.sessionReady = true;
        this.set({ sessionId: String(inner.session_id), owners, claimed: inner.claimed === true, sealedMode });
        this.gate.ready(new Envelope(session.keys!));
        this.set({ phase: this._state.report!.intelRoot ? 'verified' : 'simulated', message: this.label() });
        break;
      }
      case 'mode':
        this.set({ sealedMode: parseSealedMode(inner.sealed_mode) });
        if (this.ready) {
          this.set({ message: this.label() });
        }
        break;
      case 'secret_request':
        this._secretRequested.emit({
          requestId: String(inner.request_id),
          name: String(inner.name),
          prompt: String(inner.prompt ?? ''),
          timeoutS: Number(inner.timeout_s ?? 300),
          generation,
          sessionId: session.sessionIdHex
        });
        break;
      case 'secret_cancel':
        this._secretCancelled.emit({ requestId: String(inner.request_id), generation });
        break;
      case 'secret_result':
        if (inner.ok) {
          this.host.notify('success', `Secret '${String(inner.name)}' is in the kernel's memory (sent end-to-end encrypted).`);
        } else {
          this.host.notify('error', `Secret '${String(inner.name)}' was not stored: ${String(inner.message ?? '')}`);
        }
        break;
      case 'owner_result':
        if (Array.isArray(inner.owners)) {
          this.set({ owners: (inner.owners as OwnerInfo[]).map(o => ({ fingerprint: String(o.fingerprint), label: String(o.label ?? '') })) });
        }
        this.host.notify(inner.ok ? 'success' : 'error', inner.ok ? 'PPML: the new owner key was added.' : `PPML: the kernel refused the grant: ${String(inner.message ?? '')}`);
        break;
    }
  }

  private async sendSealed(generation: number, make: (s: BrowserSession) => Promise<Record<string, unknown>>): Promise<void> {
    const session = this.session;
    const commId = this.commId;
    if (generation !== this._generation || !session || !commId || !this.ready) {
      throw new Error('the session this was meant for has ended (kernel restarted or re-verified); nothing was sent');
    }
    const frame = await make(session);
    if (generation !== this._generation || this.session !== session) {
      throw new Error('the session ended while encrypting; nothing was sent');
    }
    this.sendControl('comm_msg', { comm_id: commId, data: frame });
  }

  /**
   * Send a secret (answering `requestId`, or unsolicited when null) on the session of
   * `generation` (the one the dialog was opened for), never on a later one.
   */
  sendSecret(generation: number, requestId: string | null, name: string, value: string, replace = false): Promise<void> {
    const inner: Inner = { type: 'secret', request_id: requestId, name, value };
    if (replace) {
      inner.replace = true;
    }
    return this.sendSealed(generation, s => s.seal(inner));
  }

  decline(generation: number, requestId: string, reason: string): Promise<void> {
    return this.sendSealed(generation, s => s.seal({ type: 'secret_decline', request_id: requestId, reason }));
  }

  /** Grant `ownerPubB64` (another browser's owner key) access to this kernel. */
  grant(generation: number, ownerPubB64: string, label: string): Promise<void> {
    let pub: Uint8Array;
    try {
      pub = b64decode(ownerPubB64.trim(), 'owner key');
    } catch (e) {
      return Promise.reject(new Error('an owner key is the base64 text shown by "PPML: Show my owner key"'));
    }
    return this.sendSealed(generation, s => s.grant(pub, label));
  }
}

/** All attestations of this browser window, one per kernel connection. */
export class AttestationManager {
  private readonly byConnection = new Map<Kernel.IKernelConnection, KernelAttestation>();
  private _changed = new Signal<this, KernelAttestation>(this);
  private _secretRequested = new Signal<this, { attestation: KernelAttestation; request: SecretRequest }>(this);
  private _secretCancelled = new Signal<this, { attestation: KernelAttestation; requestId: string; generation: number }>(this);
  private _invalidated = new Signal<this, { attestation: KernelAttestation; generation: number }>(this);

  constructor(private readonly host: AttestationHost) {}

  get changed(): ISignal<this, KernelAttestation> {
    return this._changed;
  }

  get secretRequested(): ISignal<this, { attestation: KernelAttestation; request: SecretRequest }> {
    return this._secretRequested;
  }

  get secretCancelled(): ISignal<this, { attestation: KernelAttestation; requestId: string; generation: number }> {
    return this._secretCancelled;
  }

  get invalidated(): ISignal<this, { attestation: KernelAttestation; generation: number }> {
    return this._invalidated;
  }

  /** Every live attestation (e.g. to find the ones of a kernel id). */
  all(): KernelAttestation[] {
    return [...this.byConnection.values()];
  }

  /** The attestation of a connection (undefined if none was attached). */
  get(kernel: Kernel.IKernelConnection | null | undefined): KernelAttestation | undefined {
    if (!kernel) {
      return undefined;
    }
    const existing = this.byConnection.get(kernel);
    return existing && !existing.isDisposed ? existing : undefined;
  }

  /** Install the sealing gate on a new connection and start attesting (idempotent). */
  attach(kernel: Kernel.IKernelConnection): KernelAttestation {
    const existing = this.get(kernel);
    if (existing) {
      return existing;
    }
    const gate = SealingGate.install(kernel);
    // A clone is a new connection made without the kernel manager: gate it too.
    const clone = kernel.clone.bind(kernel);
    kernel.clone = (options?: any) => {
      const c = clone(options);
      this.attach(c);
      return c;
    };
    const attestation = new KernelAttestation(kernel, this.host, gate);
    this.byConnection.set(kernel, attestation);
    attestation.stateChanged.connect(() => this._changed.emit(attestation));
    attestation.secretRequested.connect((_, request) => this._secretRequested.emit({ attestation, request }));
    attestation.secretCancelled.connect((_, c) => this._secretCancelled.emit({ attestation, ...c }));
    attestation.invalidated.connect((_, generation) => this._invalidated.emit({ attestation, generation }));
    kernel.disposed.connect(() => {
      attestation.dispose();
      this.byConnection.delete(kernel);
    });
    void attestation.attest();
    return attestation;
  }
}
