/**
 * The browser side of one `ppml-attest/2` session, independent of JupyterLab:
 * hello -> (caller verifies the quote) -> bind REPORT_DATA and the owner list, derive the
 * per-stream keys -> sealed attestation frames (`finished` with the owner proof, ...).
 * Notebook-message sealing on the same keys is in ./envelope.
 *
 * Every receive path validates completely before it changes any state: a rejected frame
 * does not consume its sequence number (docs/protocol.md 4.3).
 */

import { b64decode, b64encode, equal, hex } from '../dcap/bytes';
import {
  ChannelCryptoError,
  deriveSessionKeys,
  ecdh,
  exportPublic,
  generateKeyPair,
  MAX_OWNERS,
  openFrame,
  ownerGrantMessage,
  ownerProofMessage,
  ownersDigest,
  PROTOCOL,
  PUBLIC_KEY_SIZE,
  reportData,
  seal,
  SessionKeys,
  sign,
  STREAMS,
  transcriptHash
} from './crypto';

export type Inner = { type: string; [key: string]: unknown };

export interface Evidence {
  enclavePub: Uint8Array;
  owners: Uint8Array[];
  quote: Uint8Array;
  collateral: string | null;
  collateralError?: string;
  tee: Record<string, unknown>;
  kernel: Record<string, unknown>;
  timings: Record<string, number>;
}

/** The owner key this browser signs with (private key never extractable). */
export interface OwnerKey {
  privateKey: CryptoKey;
  pub: Uint8Array;
}

export interface SealedMode {
  on: boolean;
  required: boolean;
  reason: string;
}

export class ProtocolError extends Error {
  constructor(
    readonly code: string,
    message: string
  ) {
    super(message);
  }
}

export const NAME_RE = /^[A-Za-z_][A-Za-z0-9_.-]{0,63}$/;
const ID_RE = /^[A-Za-z0-9_.:-]{1,64}$/;

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function bad(message: string): never {
  throw new ProtocolError('malformed', message);
}

export function parseSealedMode(v: unknown): SealedMode {
  if (!isObj(v) || typeof v.on !== 'boolean') {
    bad("'sealed_mode' must be an object with a boolean 'on'");
  }
  return { on: v.on, required: v.required === true, reason: typeof v.reason === 'string' ? v.reason : '' };
}

/** Validate one inner kernel -> browser message (before it may consume its number). */
function checkInner(inner: unknown, first: boolean): Inner {
  if (!isObj(inner) || typeof inner.type !== 'string') {
    bad('sealed frame does not contain a message object');
  }
  const t = inner.type;
  if (first !== (t === 'ready')) {
    throw new ProtocolError('unexpected', first ? `expected 'ready' first, got '${t}'` : "a second 'ready'");
  }
  const str = (k: string, re?: RegExp): void => {
    if (typeof inner[k] !== 'string' || (re && !re.test(inner[k] as string))) {
      bad(`'${t}' field '${k}' is invalid`);
    }
  };
  const owners = (): void => {
    if (!Array.isArray(inner.owners) || inner.owners.length > MAX_OWNERS || !inner.owners.every(o => isObj(o) && typeof o.fingerprint === 'string')) {
      bad(`'${t}' field 'owners' is invalid`);
    }
  };
  switch (t) {
    case 'ready':
      // owners and sealed_mode are optional (a missing sealed_mode shows "not sealed"),
      // but typed when present.
      str('session_id', /^[0-9a-f]{32}$/);
      if (inner.owners !== undefined) {
        owners();
      }
      if (inner.sealed_mode !== undefined) {
        parseSealedMode(inner.sealed_mode);
      }
      break;
    case 'mode':
      parseSealedMode(inner.sealed_mode);
      break;
    case 'secret_request':
      str('request_id', ID_RE);
      str('name', NAME_RE);
      if (inner.prompt !== undefined && typeof inner.prompt !== 'string') {
        bad("'secret_request' field 'prompt' is invalid");
      }
      if (inner.timeout_s !== undefined && (typeof inner.timeout_s !== 'number' || !(inner.timeout_s > 0))) {
        bad("'secret_request' field 'timeout_s' is invalid");
      }
      break;
    case 'secret_result':
      if (typeof inner.ok !== 'boolean') {
        bad("'secret_result' field 'ok' is invalid");
      }
      str('name');
      break;
    case 'secret_cancel':
      str('request_id', ID_RE);
      break;
    case 'owner_result':
      if (typeof inner.ok !== 'boolean') {
        bad("'owner_result' field 'ok' is invalid");
      }
      if (inner.owners !== undefined) {
        owners();
      }
      break;
    default:
      throw new ProtocolError('unexpected', `unexpected message type '${t}' in a sealed frame`);
  }
  return inner as Inner;
}

/** Validate the kernel's evidence message. */
export function parseEvidence(msg: unknown): Evidence {
  if (!isObj(msg)) {
    bad('evidence must be a JSON object');
  }
  const m = msg;
  if (m.type === 'error') {
    throw new ProtocolError(String(m.code ?? 'error'), `the kernel refused: ${String(m.message ?? '')}`);
  }
  if (m.type !== 'evidence' || m.protocol !== PROTOCOL) {
    throw new ProtocolError('unexpected', `expected ${PROTOCOL} evidence, got ${String(m.type)} ${String(m.protocol ?? '')}`);
  }
  const b64 = (v: unknown, k: string): Uint8Array => {
    if (typeof v !== 'string') {
      bad(`evidence field '${k}' is missing`);
    }
    try {
      return b64decode(v, k);
    } catch (e) {
      bad((e as Error).message);
    }
  };
  const enclavePub = b64(m.enclave_pub, 'enclave_pub');
  if (enclavePub.length !== PUBLIC_KEY_SIZE || enclavePub[0] !== 4) {
    bad('enclave_pub must be a 65-byte uncompressed point');
  }
  if (!Array.isArray(m.owners) || m.owners.length > MAX_OWNERS) {
    bad(`evidence field 'owners' must be a list of at most ${MAX_OWNERS} keys`);
  }
  const owners = m.owners.map((o, i) => {
    const pub = b64(o, `owners[${i}]`);
    if (pub.length !== PUBLIC_KEY_SIZE || pub[0] !== 4) {
      bad(`owners[${i}] must be a 65-byte uncompressed point`);
    }
    return pub;
  });
  const collateral = m.collateral;
  if (collateral !== null && typeof collateral !== 'string') {
    bad('collateral must be a JSON string or null');
  }
  const obj = (v: unknown): Record<string, any> => (isObj(v) ? v : {});
  return {
    enclavePub,
    owners,
    quote: b64(m.quote, 'quote'),
    collateral: collateral as string | null,
    collateralError: typeof m.collateral_error === 'string' ? m.collateral_error : undefined,
    tee: obj(m.tee),
    kernel: obj(m.kernel),
    timings: obj(m.timings)
  };
}

export class BrowserSession {
  keys: SessionKeys | null = null;
  /** Whether the verified owner list was empty (this session will claim the kernel). */
  unowned = false;
  private sendSeq = 0;
  private recvSeq = 0;
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(
    private readonly keyPair: CryptoKeyPair,
    readonly owner: OwnerKey,
    readonly nonce: Uint8Array,
    readonly browserPub: Uint8Array
  ) {}

  /** `keyPair`/`nonce` only for test vectors; normally both are fresh. */
  static async create(owner: OwnerKey, keyPair?: CryptoKeyPair, nonce?: Uint8Array): Promise<BrowserSession> {
    const kp = keyPair ?? (await generateKeyPair());
    const n = nonce ?? crypto.getRandomValues(new Uint8Array(32));
    return new BrowserSession(kp, owner, n, await exportPublic(kp.publicKey));
  }

  get sessionIdHex(): string {
    return this.keys ? hex(this.keys.sessionId) : '';
  }

  hello(): Record<string, unknown> {
    return {
      type: 'hello',
      protocol: PROTOCOL,
      nonce: b64encode(this.nonce),
      browser_pub: b64encode(this.browserPub),
      owner_pub: b64encode(this.owner.pub)
    };
  }

  /** What REPORT_DATA must be for this handshake with `enclavePub` and `owners`. */
  async expectedReportData(enclavePub: Uint8Array, owners: Uint8Array[]): Promise<Uint8Array> {
    return reportData(this.nonce, this.browserPub, enclavePub, this.owner.pub, await ownersDigest(owners));
  }

  /**
   * After the quote verified: check it binds this handshake and owner list, that this
   * browser may own the kernel, then derive the keys. `quoteReportData` must come from
   * the verified quote. Nothing is kept unless every check passed.
   */
  async bind(evidence: Evidence, quoteReportData: Uint8Array, exportable = false): Promise<void> {
    if (this.keys) {
      throw new ProtocolError('state', 'session is already bound');
    }
    const digest = await ownersDigest(evidence.owners);
    const expected = await reportData(this.nonce, this.browserPub, evidence.enclavePub, this.owner.pub, digest);
    if (!equal(expected, quoteReportData)) {
      throw new ProtocolError('binding', "the quote's REPORT_DATA does not bind this handshake (replayed or substituted quote or owner list)");
    }
    if (evidence.owners.length > 0 && !evidence.owners.some(o => equal(o, this.owner.pub))) {
      throw new ProtocolError('not_owner', 'another party controls this kernel (its verified owner list does not contain this browser)');
    }
    const th = await transcriptHash(this.nonce, this.browserPub, evidence.enclavePub, this.owner.pub, digest, evidence.quote);
    const shared = await ecdh(this.keyPair.privateKey, evidence.enclavePub);
    const keys = await deriveSessionKeys(shared, th, exportable);
    shared.fill(0);
    this.unowned = evidence.owners.length === 0;
    this.keys = keys;
  }

  /** The owner proof for `finished` (section 4.4). */
  async ownerSignature(): Promise<Uint8Array> {
    if (!this.keys) {
      throw new ProtocolError('state', 'session is not established');
    }
    return sign(this.owner.privateKey, ownerProofMessage(this.keys.transcriptHash));
  }

  /** The sealed `finished` frame: key confirmation, verdict (display only), owner proof. */
  async finished(verdict: Record<string, unknown>): Promise<Record<string, unknown>> {
    const ownerSig = await this.ownerSignature();
    return this.seal({ type: 'finished', verdict, owner_sig: b64encode(ownerSig) });
  }

  /** A sealed `owner_grant` for `newOwnerPub`, signed with this browser's owner key. */
  async grant(newOwnerPub: Uint8Array, label: string): Promise<Record<string, unknown>> {
    if (!this.keys) {
      throw new ProtocolError('state', 'session is not established');
    }
    if (!/^[\x20-\x7e]{1,64}$/.test(label)) {
      throw new ProtocolError('malformed', 'a label is 1-64 printable ASCII characters');
    }
    const sig = await sign(this.owner.privateKey, ownerGrantMessage(this.keys.sessionId, newOwnerPub));
    return this.seal({ type: 'owner_grant', owner_pub: b64encode(newOwnerPub), label, sig: b64encode(sig) });
  }

  /** Serialise crypto operations so sequence numbers follow call order. */
  private serial<T>(f: () => Promise<T>): Promise<T> {
    const next = this.queue.then(f, f);
    this.queue = next.catch(() => undefined);
    return next;
  }

  seal(inner: Inner): Promise<Record<string, unknown>> {
    return this.serial(async () => {
      if (!this.keys) {
        throw new ProtocolError('state', 'session is not established');
      }
      const seq = this.sendSeq;
      const ct = await seal(this.keys.streams.b2k, this.keys.sessionId, STREAMS.b2k, seq, new TextEncoder().encode(JSON.stringify(inner)));
      this.sendSeq += 1;
      return { type: 'sealed', seq, ct: b64encode(ct) };
    });
  }

  open(msg: unknown): Promise<Inner> {
    return this.serial(async () => {
      if (!this.keys) {
        throw new ProtocolError('state', 'session is not established');
      }
      if (!isObj(msg) || msg.type !== 'sealed') {
        bad('not a sealed frame');
      }
      const seq = msg.seq;
      if (typeof seq !== 'number' || !Number.isInteger(seq) || seq < 0) {
        bad("field 'seq' must be a non-negative integer");
      }
      if (seq !== this.recvSeq) {
        throw new ProtocolError(seq < this.recvSeq ? 'replay' : 'reorder', `frame ${seq} rejected (expected ${this.recvSeq})`);
      }
      if (typeof msg.ct !== 'string') {
        bad("field 'ct' must be base64");
      }
      let pt: Uint8Array;
      try {
        pt = await openFrame(this.keys.streams.k2b, this.keys.sessionId, STREAMS.k2b, seq, b64decode(msg.ct, 'ct'));
      } catch (e) {
        throw new ProtocolError('decrypt', e instanceof ChannelCryptoError ? e.message : 'bad frame');
      }
      let parsed: unknown;
      try {
        parsed = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(pt));
      } catch (e) {
        bad('sealed frame does not contain JSON');
      }
      const inner = checkInner(parsed, seq === 0);
      if (inner.type === 'ready' && inner.session_id !== this.sessionIdHex) {
        throw new ProtocolError('unexpected', "'ready' names another session");
      }
      this.recvSeq += 1;
      return inner;
    });
  }
}
