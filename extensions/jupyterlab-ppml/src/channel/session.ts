/**
 * The browser side of one `ppml-attest/1` session, independent of JupyterLab:
 * hello -> (caller verifies the quote) -> bind REPORT_DATA, derive keys -> sealed frames.
 */

import { b64decode, b64encode, equal } from '../dcap/bytes';
import {
  ChannelCryptoError,
  deriveSessionKeys,
  DIR_B2K,
  DIR_K2B,
  ecdh,
  exportPublic,
  generateKeyPair,
  openFrame,
  PROTOCOL,
  PUBLIC_KEY_SIZE,
  reportData,
  seal,
  SessionKeys,
  transcriptHash
} from './crypto';

export type Inner = { type: string; [key: string]: unknown };

export interface Evidence {
  enclavePub: Uint8Array;
  quote: Uint8Array;
  collateral: string | null;
  collateralError?: string;
  tee: Record<string, unknown>;
  kernel: Record<string, unknown>;
  timings: Record<string, number>;
}

export class ProtocolError extends Error {
  constructor(
    readonly code: string,
    message: string
  ) {
    super(message);
  }
}

const K2B_TYPES = new Set(['ready', 'secret_request', 'secret_result', 'secret_cancel']);

/** Validate the kernel's evidence message. */
export function parseEvidence(msg: unknown): Evidence {
  if (typeof msg !== 'object' || msg === null) {
    throw new ProtocolError('malformed', 'evidence must be a JSON object');
  }
  const m = msg as Record<string, unknown>;
  if (m.type === 'error') {
    throw new ProtocolError(String(m.code ?? 'error'), `the kernel refused: ${String(m.message ?? '')}`);
  }
  if (m.type !== 'evidence' || m.protocol !== PROTOCOL) {
    throw new ProtocolError('unexpected', `expected ${PROTOCOL} evidence, got ${String(m.type)}`);
  }
  const field = (k: string): Uint8Array => {
    if (typeof m[k] !== 'string') {
      throw new ProtocolError('malformed', `evidence field '${k}' is missing`);
    }
    try {
      return b64decode(m[k] as string, k);
    } catch (e) {
      throw new ProtocolError('malformed', (e as Error).message);
    }
  };
  const enclavePub = field('enclave_pub');
  if (enclavePub.length !== PUBLIC_KEY_SIZE) {
    throw new ProtocolError('malformed', 'enclave_pub must be 65 bytes');
  }
  const collateral = m.collateral;
  if (collateral !== null && typeof collateral !== 'string') {
    throw new ProtocolError('malformed', 'collateral must be a JSON string or null');
  }
  const obj = (v: unknown): Record<string, any> => (typeof v === 'object' && v !== null ? (v as Record<string, any>) : {});
  return {
    enclavePub,
    quote: field('quote'),
    collateral: collateral as string | null,
    collateralError: typeof m.collateral_error === 'string' ? m.collateral_error : undefined,
    tee: obj(m.tee),
    kernel: obj(m.kernel),
    timings: obj(m.timings)
  };
}

export class BrowserSession {
  keys: SessionKeys | null = null;
  private sendSeq = 0;
  private recvSeq = 0;
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(
    private readonly keyPair: CryptoKeyPair,
    readonly nonce: Uint8Array,
    readonly browserPub: Uint8Array
  ) {}

  /** `keyPair`/`nonce` only for test vectors; normally both are fresh. */
  static async create(keyPair?: CryptoKeyPair, nonce?: Uint8Array): Promise<BrowserSession> {
    const kp = keyPair ?? (await generateKeyPair());
    const n = nonce ?? crypto.getRandomValues(new Uint8Array(32));
    return new BrowserSession(kp, n, await exportPublic(kp.publicKey));
  }

  hello(): Record<string, unknown> {
    return {
      type: 'hello',
      protocol: PROTOCOL,
      nonce: b64encode(this.nonce),
      browser_pub: b64encode(this.browserPub)
    };
  }

  /** What REPORT_DATA must be for this handshake with `enclavePub`. */
  expectedReportData(enclavePub: Uint8Array): Promise<Uint8Array> {
    return reportData(this.nonce, this.browserPub, enclavePub);
  }

  /**
   * After the quote verified: check it binds this handshake, then derive the keys.
   * `quoteReportData` must come from the verified quote.
   */
  async bind(evidence: Evidence, quoteReportData: Uint8Array, exportable = false): Promise<void> {
    const expected = await this.expectedReportData(evidence.enclavePub);
    if (!equal(expected, quoteReportData)) {
      throw new ProtocolError('binding', "the quote's REPORT_DATA does not bind this handshake (replayed or substituted quote)");
    }
    const th = await transcriptHash(this.nonce, this.browserPub, evidence.enclavePub, evidence.quote);
    const shared = await ecdh(this.keyPair.privateKey, evidence.enclavePub);
    this.keys = await deriveSessionKeys(shared, th, exportable);
    shared.fill(0);
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
      const ct = await seal(this.keys.b2k, this.keys.sessionId, DIR_B2K, seq, new TextEncoder().encode(JSON.stringify(inner)));
      this.sendSeq += 1;
      return { type: 'sealed', seq, ct: b64encode(ct) };
    });
  }

  open(msg: unknown): Promise<Inner> {
    return this.serial(async () => {
      if (!this.keys) {
        throw new ProtocolError('state', 'session is not established');
      }
      const m = msg as Record<string, unknown>;
      if (typeof m !== 'object' || m === null || m.type !== 'sealed') {
        throw new ProtocolError('malformed', 'not a sealed frame');
      }
      const seq = m.seq;
      if (typeof seq !== 'number' || !Number.isInteger(seq) || seq < 0) {
        throw new ProtocolError('malformed', "field 'seq' must be a non-negative integer");
      }
      if (seq !== this.recvSeq) {
        throw new ProtocolError(
          seq < this.recvSeq ? 'replay' : 'reorder',
          `frame ${seq} rejected (expected ${this.recvSeq})`
        );
      }
      let pt: Uint8Array;
      try {
        pt = await openFrame(this.keys.k2b, this.keys.sessionId, DIR_K2B, seq, b64decode(String(m.ct), 'ct'));
      } catch (e) {
        throw new ProtocolError('decrypt', e instanceof ChannelCryptoError ? e.message : 'bad frame');
      }
      let inner: Inner;
      try {
        inner = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(pt));
      } catch (e) {
        throw new ProtocolError('malformed', 'sealed frame does not contain JSON');
      }
      if (typeof inner !== 'object' || inner === null || !K2B_TYPES.has(inner.type)) {
        throw new ProtocolError('unexpected', 'unexpected message type in sealed frame');
      }
      this.recvSeq += 1;
      return inner;
    });
  }
}
