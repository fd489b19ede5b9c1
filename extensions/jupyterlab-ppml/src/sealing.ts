/**
 * The sealing gate of one KernelConnection (docs/protocol.md section 6).
 *
 * How it hooks in, and why this way: JupyterLab 4's KernelConnection sends every message
 * through its (TypeScript-private, but ordinary) method `_sendMessage(msg, queue)` and
 * handles every received, deserialized message in `_handleMessage(msg)`, which its
 * `_msgChain` awaits one after the other. Wrapping these two methods on each connection
 * instance (installed synchronously right after the connection is constructed, before its
 * WebSocket can deliver anything) puts the gate exactly where the messaging layer is:
 * below futures, comms, widgets, the completer and the inspector, above the serializer.
 * So everything that uses the connection is covered without knowing about sealing, the
 * received order is kept (the chain awaits our async open), and nothing else changes.
 * The alternatives were weaker here: pluggable IKernelManager/IServerSettings tokens must
 * be provided before the service manager exists (not possible from an ordinary extension
 * in both JupyterLab and Notebook 7, and would replace the whole manager), and a custom
 * serializer is synchronous (no WebCrypto) and sees no per-connection state.
 * `connectTo` of the kernel manager is wrapped to find every connection (notebooks,
 * consoles, several tabs); `clone()` goes through it too.
 *
 * Rules (fail closed):
 *  - outgoing: what `mustSeal` names is sealed; until the session is ready it is HELD in
 *    order; when verification fails it is never sent in the clear, the request gets a
 *    local error reply (the cell shows why);
 *  - incoming: sealed messages to this session are opened (stream by channel, ids
 *    checked), other sessions' ignored, failures logged and shown; in the clear only
 *    what the kernel sends in the clear by design passes (status, kernel_info_reply,
 *    shutdown/interrupt replies, error replies that say why a sealed request was refused).
 */

// JupyterLab's own message validation (a plain module; bundled, not shared).
import { validateMessage } from '@jupyterlab/services/lib/kernel/validate';

import { Envelope, mustSeal, SEALED_KEY, sealedMarker, WireMessage } from './channel/envelope';
import { ProtocolError } from './channel/session';

type Msg = WireMessage & { header: WireMessage['header'] & { session?: string; date?: string; username?: string; version?: string } };

/** The private parts of a JupyterLab 4 KernelConnection the gate uses. */
interface RawConnection {
  _sendMessage(msg: Msg, queue?: boolean): void;
  _handleMessage(msg: Msg): Promise<void>;
  _onWSMessage(evt: MessageEvent): void;
  _ws: WebSocket | null;
  _anyMessage: { emit(args: unknown): void };
  serverSettings: { serializer: { deserialize(data: unknown, protocol?: string): Msg } };
  _msgChain: Promise<void>;
  _kernelSession: string;
  clientId: string;
  username: string;
  isDisposed: boolean;
  id: string;
}

export type GateState = 'unknown' | 'plain' | 'holding' | 'ready' | 'failed';

/** Clear messages a PPML kernel sends by design. */
const CLEAR_IN = new Set(['status', 'kernel_info_reply', 'shutdown_reply', 'interrupt_reply', 'debug_reply', 'debug_event']);
const MAX_HELD = 10_000;

export interface GateEvents {
  /** A message the gate refused or could not open (shown in the report, notified). */
  rejected(text: string): void;
  /** An iopub comm message of the attestation comm (routed before everything else). */
  attestationMessage(msg: Msg): void;
  isAttestationComm(commId: string): boolean;
  /** The kernel lost track of our sealed stream (reorder/replay): re-attest. */
  desync?(): void;
}

export function isInstalled(kernel: unknown): boolean {
  return !!(kernel as { __ppmlGate?: SealingGate }).__ppmlGate;
}

export function gateOf(kernel: unknown): SealingGate | undefined {
  return (kernel as { __ppmlGate?: SealingGate }).__ppmlGate;
}

/** Appended to a clear refusal of a sealed request: it is the server's word, not the enclave's. */
export const UNAUTHENTICATED_REFUSAL =
  '(unsealed reply: the enclave did not sign it, so the server may have written it; nothing ran)';

export class SealingGate {
  private _state: GateState = 'unknown';
  private envelope: Envelope | null = null;
  private failure = '';
  private held: Msg[] = [];
  private sending: Promise<void> = Promise.resolve();
  private epoch = 0;
  private readonly origSend: RawConnection['_sendMessage'];
  private readonly origHandle: RawConnection['_handleMessage'];
  /** msg_ids of our sealed requests (a clear error reply to one of them may pass). */
  private readonly sealedRequests = new Map<string, string>();
  events: GateEvents | null = null;
  /** Counters for the report panel and tests. */
  readonly counts = { sealed: 0, opened: 0, held: 0, refusedLocally: 0, dropped: 0, foreign: 0 };

  constructor(private readonly kc: RawConnection) {
    if (typeof kc._sendMessage !== 'function' || typeof kc._handleMessage !== 'function') {
      throw new Error('this JupyterLab version has no KernelConnection._sendMessage/_handleMessage: PPML sealing unavailable');
    }
    this.origSend = kc._sendMessage.bind(kc);
    this.origHandle = kc._handleMessage.bind(kc);
    kc._sendMessage = (msg: Msg, queue = true) => this.send(msg, queue);
    kc._handleMessage = (msg: Msg) => this.handle(msg);
    // JupyterLab validates IOPub content before _handleMessage; sealed content (the
    // envelope marker) would fail that check and be dropped, so sealed messages skip it
    // here and are validated after they are opened (in `handle`). Everything else goes
    // through JupyterLab's own handler unchanged. The socket already exists (it is
    // created in the constructor), so its handler is replaced too; reconnects read the
    // property.
    const origOnMessage = kc._onWSMessage;
    if (typeof origOnMessage === 'function') {
      const onMessage = (evt: MessageEvent): void => {
        if (this._state === 'plain') {
          return origOnMessage(evt);
        }
        let msg: Msg;
        try {
          msg = kc.serverSettings.serializer.deserialize(evt.data, kc._ws?.protocol ?? '');
        } catch (e) {
          return origOnMessage(evt); // let JupyterLab report it
        }
        const content = msg?.content as Record<string, unknown> | undefined;
        if (!content || typeof content !== 'object' || !(SEALED_KEY in content)) {
          return origOnMessage(evt);
        }
        const h = msg.header;
        if (!h || typeof h.msg_id !== 'string' || typeof h.msg_type !== 'string' || typeof h.session !== 'string' || typeof msg.channel !== 'string' || typeof msg.parent_header !== 'object') {
          this.reject('dropped a sealed message with a malformed header');
          return;
        }
        kc._kernelSession = h.session;
        kc._msgChain = kc._msgChain
          .then(() => kc._handleMessage(msg))
          .catch((error: Error) => {
            if (String(error?.message ?? '').startsWith('Canceled future for ')) {
              console.error(error);
            }
          });
        kc._anyMessage.emit({ msg, direction: 'recv' });
      };
      kc._onWSMessage = onMessage;
      if (kc._ws && kc._ws.onmessage === origOnMessage) {
        kc._ws.onmessage = onMessage;
      }
    }
    (kc as unknown as { __ppmlGate: SealingGate }).__ppmlGate = this;
  }

  /** Install the gate on a KernelConnection (idempotent). */
  static install(kernel: unknown): SealingGate {
    return gateOf(kernel) ?? new SealingGate(kernel as RawConnection);
  }

  get state(): GateState {
    return this._state;
  }

  get sid(): string {
    return this.envelope?.sid ?? '';
  }

  // ----- state changes (called by the attestation) -----

  /** Not a PPML kernel: everything passes in the clear, as before. */
  plain(): void {
    this._state = 'plain';
    this.envelope = null;
    this.flush();
  }

  /** Verifying, approving, restarting: hold what must be sealed. `dropHeld` after a restart. */
  hold(dropHeld = false): void {
    this.epoch += 1;
    this._state = 'holding';
    this.envelope = null;
    if (dropHeld) {
      // JupyterLab itself drops its pending messages and futures on a restart.
      this.held = [];
    }
  }

  /** A verified session: send the held messages sealed, in order. */
  ready(envelope: Envelope): void {
    this.epoch += 1;
    this._state = 'ready';
    this.envelope = envelope;
    this.sealedRequests.clear();
    this.flush();
  }

  /** Verification failed: nothing that must be sealed is ever sent; held requests fail locally. */
  fail(reason: string): void {
    this.epoch += 1;
    this._state = 'failed';
    this.failure = reason;
    this.envelope = null;
    this.flush();
  }

  private flush(): void {
    const held = this.held;
    this.held = [];
    for (const msg of held) {
      this.send(msg, true);
    }
  }

  // ----- outgoing -----

  private send(msg: Msg, queue: boolean): void {
    const content = msg.content as Record<string, unknown> | null;
    if (!mustSeal(msg) || (content && typeof content === 'object' && SEALED_KEY in content)) {
      // Clear by design, or already sealed (JupyterLab re-sends its own pending queue).
      this.origSend(msg, queue);
      return;
    }
    switch (this._state) {
      case 'plain':
        this.origSend(msg, queue);
        return;
      case 'unknown':
      case 'holding':
        if (this.held.length >= MAX_HELD) {
          this.refuseLocally(msg, 'too many requests are waiting for the enclave to be verified');
          return;
        }
        this.held.push(msg);
        this.counts.held += 1;
        return;
      case 'failed':
        this.refuseLocally(msg, this.failure);
        return;
      case 'ready': {
        const envelope = this.envelope!;
        const epoch = this.epoch;
        const sealed = envelope.seal(msg);
        this.sending = this.sending.then(async () => {
          let out: Msg;
          try {
            out = await sealed;
          } catch (e) {
            this.refuseLocally(msg, `sealing failed: ${(e as Error).message}`);
            return;
          }
          if (epoch !== this.epoch || this.kc.isDisposed) {
            // The session ended while sealing (restart, re-attestation): never send it.
            return;
          }
          if ('subshell_id' in out.header) {
            // JupyterLab 4.6 sends comm traffic on kernel subshells (other threads in the
            // kernel). A sealed stream must be opened in the order it was sealed, and a
            // request for an unknown subshell is refused before the kernel opens it (its
            // number would never be used, and every later request would be "reordered").
            // So sealed requests all go to the main shell, in order; comm messages then
            // wait for a running cell, as before subshells existed.
            const { subshell_id: _drop, ...header } = out.header as Record<string, unknown>;
            void _drop;
            out = { ...out, header: header as Msg['header'] };
          }
          this.sealedRequests.set(msg.header.msg_id, msg.header.msg_type);
          if (this.sealedRequests.size > 4096) {
            this.sealedRequests.delete(this.sealedRequests.keys().next().value as string);
          }
          this.counts.sealed += 1;
          console.debug(`jupyterlab-ppml: sent a sealed ${msg.channel} ${msg.header.msg_type} (${this.kc.id.slice(0, 8)} ${envelope.sid.slice(0, 8)})`);
          try {
            this.origSend(out, true);
          } catch (e) {
            this.events?.rejected(`could not send a sealed ${msg.header.msg_type}: ${(e as Error).message}`);
          }
        });
        return;
      }
    }
  }

  /** Answer a request locally with an error (it never left this browser). */
  private refuseLocally(msg: Msg, reason: string): void {
    this.counts.refusedLocally += 1;
    const type = msg.header.msg_type;
    if (!type.endsWith('_request')) {
      return; // comm messages, input replies: nothing waits for an answer
    }
    const ename = 'PPMLNotSent';
    const evalue = `PPML: nothing was sent to the kernel: ${reason}`;
    const now = new Date().toISOString();
    const make = (channel: string, msgType: string, content: Record<string, unknown>): Msg => ({
      channel,
      header: {
        msg_id: `ppml-local-${Math.random().toString(16).slice(2)}`,
        msg_type: msgType,
        session: this.kc._kernelSession,
        username: 'ppml',
        date: now,
        version: '5.3'
      },
      parent_header: msg.header,
      content,
      metadata: {},
      buffers: []
    });
    const local: Msg[] = [];
    if (type === 'execute_request') {
      local.push(make('iopub', 'error', { ename, evalue, traceback: [`\u001b[0;31m${ename}\u001b[0m: ${evalue}`] }));
    }
    local.push(make('shell', type.replace(/_request$/, '_reply'), { status: 'error', ename, evalue, traceback: [], execution_count: null }));
    local.push(make('iopub', 'status', { execution_state: 'idle' }));
    for (const m of local) {
      this.kc._msgChain = this.kc._msgChain.then(() => this.origHandle(m)).catch(() => undefined);
    }
  }

  // ----- incoming -----

  private async handle(msg: Msg): Promise<void> {
    const type = msg.header.msg_type;
    if (
      msg.channel === 'iopub' &&
      (type === 'comm_msg' || type === 'comm_close') &&
      this.events?.isAttestationComm(String((msg.content as Record<string, unknown>)?.comm_id ?? ''))
    ) {
      this.events.attestationMessage(msg);
      return;
    }
    let marker;
    try {
      marker = sealedMarker(msg);
    } catch (e) {
      this.reject(`dropped a ${type} with a malformed seal`);
      return;
    }
    if (marker) {
      const envelope = this.envelope;
      if (!envelope) {
        this.counts.dropped += 1;
        return; // nothing to open it with (not verified yet, or failed): never shown
      }
      const epoch = this.epoch;
      let result;
      try {
        result = await envelope.open(msg);
      } catch (e) {
        const code = e instanceof ProtocolError ? e.code : 'error';
        this.reject(`rejected a sealed ${msg.channel} ${type} (${code}): ${(e as Error).message}`);
        return;
      }
      if (epoch !== this.epoch) {
        return;
      }
      if (result.kind === 'foreign') {
        this.counts.foreign += 1; // another tab's session (IOPub goes to every frontend)
        console.debug(`jupyterlab-ppml: ignored a ${msg.channel} ${type} sealed to another session`);
        return;
      }
      if (result.kind === 'opened') {
        try {
          validateMessage(result.msg as any);
        } catch (e) {
          this.reject(`a sealed ${msg.channel} ${type} opened to an invalid message: ${(e as Error).message}`);
          return;
        }
        this.counts.opened += 1;
        console.debug(`jupyterlab-ppml: opened a sealed ${msg.channel} ${type} (${this.kc.id.slice(0, 8)} ${envelope.sid.slice(0, 8)})`);
        return this.origHandle(result.msg as Msg);
      }
    }
    // In the clear. The control channel is never sealed (attestation comm aside, it
    // carries only replies to what JupyterLab asked on it: subshells, debug, interrupt).
    if (this._state === 'plain' || this._state === 'unknown' || msg.channel === 'control') {
      return this.origHandle(msg);
    }
    if (CLEAR_IN.has(type)) {
      return this.origHandle(msg);
    }
    const parentId = (msg.parent_header as { msg_id?: string })?.msg_id ?? '';
    const content = (msg.content ?? {}) as Record<string, unknown>;
    if (msg.channel === 'shell' && type.endsWith('_reply') && content.status === 'error' && this.sealedRequests.has(parentId)) {
      // The kernel could not open (or refused) one of our sealed requests and says why in
      // the clear. A clear reply is not authenticated (the server could have written it:
      // the worst it can do is what dropping the request does), so it is shown as the
      // server's claim, as text, and passed on as an error reply (nothing ran here).
      const ename = String(content.ename ?? 'PPMLSealedRequestRefused').slice(0, 100);
      const claim = String(content.evalue ?? '').slice(0, 1000);
      const evalue = `${claim} ${UNAUTHENTICATED_REFUSAL}`;
      this.reject(`an unsealed reply says the kernel refused a sealed ${this.sealedRequests.get(parentId)}: ${ename}: ${claim}`);
      if (ename === 'PPMLSealedFrameRejected' && /\((reorder|replay|state)\)/.test(evalue)) {
        // Our numbering and the kernel's disagree (a sealed request was lost on the way):
        // nothing sealed in this session can get through any more; start a new one.
        this.events?.desync?.();
      }
      if (this.sealedRequests.get(parentId) === 'execute_request') {
        await this.origHandle({
          ...msg,
          channel: 'iopub',
          header: { ...msg.header, msg_id: `${msg.header.msg_id}-ppml-shown`, msg_type: 'error' },
          content: { ename, evalue, traceback: [`\u001b[0;31m${ename}\u001b[0m: ${evalue}`] },
          metadata: {},
          buffers: []
        });
      }
      return this.origHandle({ ...msg, content: { status: 'error', ename, evalue, traceback: [] }, metadata: {}, buffers: [] });
    }
    // Anything else in the clear on a PPML connection is not from the kernel's sealed
    // session (or another frontend's unsealed traffic): never shown.
    this.counts.dropped += 1;
    if (!(type === 'comm_msg' || type === 'comm_close' || type === 'comm_open')) {
      console.debug(`jupyterlab-ppml: dropped a clear ${msg.channel} ${type} (parent ${String((msg.parent_header as { msg_type?: string })?.msg_type ?? 'none')})`);
    }
  }

  private reject(text: string): void {
    this.counts.dropped += 1;
    this.events?.rejected(text);
  }
}
