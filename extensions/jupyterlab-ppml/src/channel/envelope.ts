/**
 * Sealed notebook messages (docs/protocol.md section 6), independent of JupyterLab:
 * a Jupyter message keeps header, parent header and channel in the clear; content,
 * metadata and buffers travel in one AES-256-GCM buffer on the stream of its channel.
 *
 * plaintext = lp(JSON) || lp(buffer_0) || ... ; the JSON repeats msg_id, msg_type (and
 * parent_msg_id from the kernel) so sealed content cannot be moved to another message.
 * Each stream accepts only its next sequence number; a rejected message changes no state.
 */

import { concat, hex, lp } from '../dcap/bytes';
import { ChannelCryptoError, openFrame, seal, SessionKeys, StreamName, STREAMS } from './crypto';
import { ProtocolError } from './session';

/** The parts of a Jupyter message the envelope reads and writes. */
export interface WireMessage {
  channel: string;
  header: { msg_id: string; msg_type: string; [k: string]: unknown };
  parent_header: { msg_id?: string; [k: string]: unknown } | Record<string, never>;
  content: unknown;
  metadata: unknown;
  buffers?: (ArrayBuffer | ArrayBufferView)[];
  [k: string]: unknown;
}

export const SEALED_KEY = 'ppml_sealed';
export const ENVELOPE_VERSION = 2;
/** The largest sealed buffer accepted (bounds the work a relay can cause). */
export const MAX_SEALED_BYTES = 256 * 1024 * 1024;

const OUT_STREAM: Record<string, StreamName> = { shell: 'b2k shell', stdin: 'b2k stdin' };
const IN_STREAM: Record<string, StreamName> = { shell: 'k2b shell', iopub: 'k2b iopub', stdin: 'k2b stdin' };

/** Shell requests that stay in the clear (section 6). */
export const CLEAR_SHELL_REQUESTS = new Set(['kernel_info_request', 'shutdown_request', 'interrupt_request']);

/** Whether the browser must seal this outgoing message. */
export function mustSeal(msg: { channel: string; header: { msg_type: string } }): boolean {
  if (msg.channel === 'shell') {
    return !CLEAR_SHELL_REQUESTS.has(msg.header.msg_type);
  }
  if (msg.channel === 'stdin') {
    return true; // input_reply, the only thing a frontend sends on stdin
  }
  return false;
}

export interface SealedMarker {
  v: number;
  sid: string;
  seq: number;
}

/** The `ppml_sealed` marker of a message, or null when it is not sealed; throws when malformed. */
export function sealedMarker(msg: { content: unknown }): SealedMarker | null {
  const content = msg.content;
  if (typeof content !== 'object' || content === null || !(SEALED_KEY in content)) {
    return null;
  }
  const m = (content as Record<string, unknown>)[SEALED_KEY] as Record<string, unknown>;
  if (
    typeof m !== 'object' ||
    m === null ||
    m.v !== ENVELOPE_VERSION ||
    typeof m.sid !== 'string' ||
    !/^[0-9a-f]{32}$/.test(m.sid) ||
    typeof m.seq !== 'number' ||
    !Number.isInteger(m.seq) ||
    m.seq < 0
  ) {
    throw new ProtocolError('malformed', 'malformed ppml_sealed marker');
  }
  return { v: m.v, sid: m.sid, seq: m.seq };
}

function bytesOf(b: ArrayBuffer | ArrayBufferView): Uint8Array {
  if (b instanceof ArrayBuffer) {
    return new Uint8Array(b);
  }
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

/** lp(JSON) || lp(buffer_0) || ... */
export function encodePlaintext(json: Uint8Array, buffers: Uint8Array[]): Uint8Array {
  return concat(lp(json), ...buffers.map(b => lp(b)));
}

/** The inverse of encodePlaintext; throws on any trailing or truncated byte. */
export function decodePlaintext(pt: Uint8Array): { json: Uint8Array; buffers: Uint8Array[] } {
  const parts: Uint8Array[] = [];
  const view = new DataView(pt.buffer, pt.byteOffset, pt.byteLength);
  let off = 0;
  while (off < pt.length) {
    if (off + 4 > pt.length) {
      throw new ProtocolError('malformed', 'sealed plaintext is truncated');
    }
    const n = view.getUint32(off, false);
    off += 4;
    if (off + n > pt.length) {
      throw new ProtocolError('malformed', 'sealed plaintext is truncated');
    }
    parts.push(pt.slice(off, off + n));
    off += n;
  }
  if (parts.length === 0) {
    throw new ProtocolError('malformed', 'sealed plaintext is empty');
  }
  return { json: parts[0], buffers: parts.slice(1) };
}

export type OpenResult<T> = { kind: 'opened'; msg: T } | { kind: 'foreign' } | { kind: 'clear' };

/** Seals and opens notebook messages for one verified session. */
export class Envelope {
  private readonly sendSeq: Record<string, number> = {};
  private readonly recvSeq: Record<string, number> = {};
  private queue: Promise<unknown> = Promise.resolve();
  readonly sid: string;

  constructor(private readonly keys: SessionKeys) {
    this.sid = hex(keys.sessionId);
  }

  /** Serialise crypto operations so sequence numbers follow call order. */
  private serial<T>(f: () => Promise<T>): Promise<T> {
    const next = this.queue.then(f, f);
    this.queue = next.catch(() => undefined);
    return next;
  }

  /** The sealed form of an outgoing shell or stdin message (a new object; `msg` is untouched). */
  seal<T extends WireMessage>(msg: T): Promise<T> {
    return this.serial(async () => {
      const stream = OUT_STREAM[msg.channel];
      if (!stream) {
        throw new ProtocolError('state', `nothing is sealed on channel '${msg.channel}'`);
      }
      const json = new TextEncoder().encode(
        JSON.stringify({ msg_id: msg.header.msg_id, msg_type: msg.header.msg_type, content: msg.content ?? {}, metadata: msg.metadata ?? {} })
      );
      const pt = encodePlaintext(json, (msg.buffers ?? []).map(bytesOf));
      const seq = this.sendSeq[stream] ?? 0;
      const ct = await seal(this.keys.streams[stream], this.keys.sessionId, STREAMS[stream], seq, pt);
      this.sendSeq[stream] = seq + 1;
      return {
        ...msg,
        content: { [SEALED_KEY]: { v: ENVELOPE_VERSION, sid: this.sid, seq } },
        metadata: {},
        buffers: [new DataView(ct.buffer, ct.byteOffset, ct.byteLength)]
      };
    });
  }

  /**
   * Open an incoming message: `clear` when it is not sealed, `foreign` when it is sealed
   * to another session (another tab: ignore it), `opened` with the original content.
   * Throws ProtocolError (code replay/reorder/decrypt/malformed/unexpected) otherwise.
   */
  open<T extends WireMessage>(msg: T): Promise<OpenResult<T>> {
    return this.serial(async (): Promise<OpenResult<T>> => {
      const marker = sealedMarker(msg);
      if (!marker) {
        return { kind: 'clear' };
      }
      if (marker.sid !== this.sid) {
        return { kind: 'foreign' };
      }
      const stream = IN_STREAM[msg.channel];
      if (!stream) {
        throw new ProtocolError('unexpected', `a sealed message on channel '${msg.channel}'`);
      }
      const expected = this.recvSeq[stream] ?? 0;
      if (marker.seq !== expected) {
        throw new ProtocolError(
          marker.seq < expected ? 'replay' : 'reorder',
          `${stream} message ${marker.seq} rejected (expected ${expected})`
        );
      }
      const buffers = msg.buffers ?? [];
      if (buffers.length !== 1) {
        throw new ProtocolError('malformed', 'a sealed message carries exactly one buffer');
      }
      const ct = bytesOf(buffers[0]);
      if (ct.length > MAX_SEALED_BYTES) {
        throw new ProtocolError('malformed', 'sealed message is too large');
      }
      let pt: Uint8Array;
      try {
        pt = await openFrame(this.keys.streams[stream], this.keys.sessionId, STREAMS[stream], marker.seq, ct);
      } catch (e) {
        throw new ProtocolError('decrypt', e instanceof ChannelCryptoError ? `${stream}: ${e.message}` : 'bad message');
      }
      const { json, buffers: inner } = decodePlaintext(pt);
      let body: Record<string, unknown>;
      try {
        body = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(json));
      } catch (e) {
        throw new ProtocolError('malformed', 'sealed message does not contain JSON');
      }
      if (typeof body !== 'object' || body === null || Array.isArray(body)) {
        throw new ProtocolError('malformed', 'sealed message body is not an object');
      }
      const parentId = (msg.parent_header as { msg_id?: string } | undefined)?.msg_id ?? '';
      if (body.msg_id !== msg.header.msg_id || body.msg_type !== msg.header.msg_type || (body.parent_msg_id ?? '') !== parentId) {
        throw new ProtocolError('unexpected', 'sealed content belongs to another message (msg_id, msg_type or parent differ)');
      }
      const isObj = (v: unknown): boolean => typeof v === 'object' && v !== null && !Array.isArray(v);
      if (!isObj(body.content) || (body.metadata !== undefined && !isObj(body.metadata))) {
        throw new ProtocolError('malformed', 'sealed content or metadata is not an object');
      }
      this.recvSeq[stream] = expected + 1;
      return {
        kind: 'opened',
        msg: {
          ...msg,
          content: body.content,
          metadata: body.metadata ?? {},
          buffers: inner.map(b => new DataView(b.buffer, b.byteOffset, b.byteLength))
        }
      };
    });
  }
}
