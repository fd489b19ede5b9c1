/**
 * `ppml-attest/2` cryptography on WebCrypto, byte-identical to
 * `ppml_kernel.channel.crypto` (tests/data/channel-vectors.json pins both).
 * docs/protocol.md sections 3-4 and 6 define every byte here.
 */

import { buf, concat, hex, lp, u64be, utf8 } from '../dcap/bytes';

export const PROTOCOL = 'ppml-attest/2';
export const NONCE_SIZE = 32;
export const PUBLIC_KEY_SIZE = 65;
export const SIGNATURE_SIZE = 64;
export const MAX_SEQ = 2 ** 32 - 1;
export const MAX_OWNERS = 16;

/** The seven streams of a session and their AAD byte (section 4.2). */
export const STREAMS = {
  b2k: 1,
  k2b: 2,
  'b2k shell': 3,
  'b2k stdin': 4,
  'k2b shell': 5,
  'k2b iopub': 6,
  'k2b stdin': 7
} as const;
export type StreamName = keyof typeof STREAMS;
export const STREAM_NAMES = Object.keys(STREAMS) as StreamName[];

/** Kept for callers of the attestation-frame streams. */
export const DIR_B2K = STREAMS.b2k;
export const DIR_K2B = STREAMS.k2b;

const LABEL = {
  owners: utf8('ppml-attest/2 owners'),
  reportData: utf8('ppml-attest/2 report-data'),
  transcript: utf8('ppml-attest/2 transcript'),
  frame: utf8('ppml-attest/2 frame'),
  ownerProof: utf8('ppml-attest/2 owner-proof'),
  ownerGrant: utf8('ppml-attest/2 owner-grant')
};

export class ChannelCryptoError extends Error {}

function checkPub(pub: Uint8Array, what: string): void {
  if (pub.length !== PUBLIC_KEY_SIZE || pub[0] !== 4) {
    throw new ChannelCryptoError(`${what} must be a 65-byte uncompressed P-256 point`);
  }
}

async function sha(alg: 'SHA-256' | 'SHA-512', data: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest(alg, buf(data)));
}

/** D (section 4.1): 32 zero bytes with no owner, else SHA-256 over the owners in order. */
export async function ownersDigest(owners: Uint8Array[]): Promise<Uint8Array> {
  if (owners.length === 0) {
    return new Uint8Array(32);
  }
  if (owners.length > MAX_OWNERS) {
    throw new ChannelCryptoError(`at most ${MAX_OWNERS} owners`);
  }
  owners.forEach((o, i) => checkPub(o, `owner ${i}`));
  return sha('SHA-256', concat(lp(LABEL.owners), ...owners.map(o => lp(o))));
}

export async function reportData(
  nonce: Uint8Array,
  browserPub: Uint8Array,
  enclavePub: Uint8Array,
  ownerPub: Uint8Array,
  digest: Uint8Array
): Promise<Uint8Array> {
  if (nonce.length !== NONCE_SIZE) {
    throw new ChannelCryptoError(`nonce must be ${NONCE_SIZE} bytes`);
  }
  return sha('SHA-512', concat(lp(LABEL.reportData), lp(nonce), lp(browserPub), lp(enclavePub), lp(ownerPub), lp(digest)));
}

export async function transcriptHash(
  nonce: Uint8Array,
  browserPub: Uint8Array,
  enclavePub: Uint8Array,
  ownerPub: Uint8Array,
  digest: Uint8Array,
  quote: Uint8Array
): Promise<Uint8Array> {
  return sha(
    'SHA-256',
    concat(lp(LABEL.transcript), lp(nonce), lp(browserPub), lp(enclavePub), lp(ownerPub), lp(digest), lp(quote))
  );
}

export interface StreamKeys {
  key: CryptoKey;
  iv: Uint8Array;
}

export interface SessionKeys {
  sessionId: Uint8Array;
  transcriptHash: Uint8Array;
  streams: Record<StreamName, StreamKeys>;
  /** Raw key bytes, only when derived with `exportable` (test vectors). */
  raw?: Record<StreamName, Uint8Array>;
}

/** A fresh ephemeral ECDH P-256 key pair (private key not extractable). */
export async function generateKeyPair(): Promise<CryptoKeyPair> {
  return crypto.subtle.generateKey({ name: 'ECDH', namedCurve: 'P-256' }, false, ['deriveBits']);
}

/** A long-term owner key: ECDSA P-256, private key not extractable (section 4). */
export async function generateOwnerKey(): Promise<CryptoKeyPair> {
  return crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify']);
}

export async function exportPublic(key: CryptoKey): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.exportKey('raw', key));
}

export async function importPublic(raw: Uint8Array, what: string): Promise<CryptoKey> {
  checkPub(raw, what);
  try {
    return await crypto.subtle.importKey('raw', buf(raw), { name: 'ECDH', namedCurve: 'P-256' }, true, []);
  } catch (e) {
    throw new ChannelCryptoError(`${what} is not a point on P-256`);
  }
}

export async function ecdh(privateKey: CryptoKey, peer: Uint8Array): Promise<Uint8Array> {
  const pub = await importPublic(peer, 'peer public key');
  return new Uint8Array(await crypto.subtle.deriveBits({ name: 'ECDH', public: pub }, privateKey, 256));
}

async function hkdf(shared: CryptoKey, salt: Uint8Array, info: Uint8Array, bytes: number): Promise<Uint8Array> {
  const bits = await crypto.subtle.deriveBits(
    { name: 'HKDF', hash: 'SHA-256', salt: buf(salt), info: buf(info) },
    shared,
    bytes * 8
  );
  return new Uint8Array(bits);
}

/** HKDF-SHA-256 with the transcript hash as salt: one key and IV per stream. */
export async function deriveSessionKeys(shared: Uint8Array, th: Uint8Array, exportable = false): Promise<SessionKeys> {
  const ikm = await crypto.subtle.importKey('raw', buf(shared), 'HKDF', false, ['deriveBits']);
  const streams = {} as Record<StreamName, StreamKeys>;
  const raw = {} as Record<StreamName, Uint8Array>;
  for (const s of STREAM_NAMES) {
    const keyBytes = await hkdf(ikm, th, utf8(`ppml-attest/2 ${s} key`), 32);
    const iv = await hkdf(ikm, th, utf8(`ppml-attest/2 ${s} iv`), 12);
    const key = await crypto.subtle.importKey('raw', buf(keyBytes), 'AES-GCM', false, ['encrypt', 'decrypt']);
    streams[s] = { key, iv };
    if (exportable) {
      raw[s] = keyBytes;
    } else {
      keyBytes.fill(0);
    }
  }
  return { sessionId: th.slice(0, 16), transcriptHash: th, streams, ...(exportable ? { raw } : {}) };
}

export function frameNonce(iv: Uint8Array, seq: number): Uint8Array {
  const counter = concat(new Uint8Array(4), u64be(seq));
  return iv.map((b, i) => b ^ counter[i]);
}

export function frameAad(sessionId: Uint8Array, stream: number, seq: number): Uint8Array {
  return concat(lp(LABEL.frame), sessionId, new Uint8Array([stream]), u64be(seq));
}

function checkSeq(seq: number): void {
  if (!Number.isInteger(seq) || seq < 0 || seq > MAX_SEQ) {
    throw new ChannelCryptoError(`sequence number ${seq} is out of range`);
  }
}

export async function seal(
  keys: StreamKeys,
  sessionId: Uint8Array,
  stream: number,
  seq: number,
  plaintext: Uint8Array
): Promise<Uint8Array> {
  checkSeq(seq);
  const ct = await crypto.subtle.encrypt(
    { name: 'AES-GCM', iv: buf(frameNonce(keys.iv, seq)), additionalData: buf(frameAad(sessionId, stream, seq)) },
    keys.key,
    buf(plaintext)
  );
  return new Uint8Array(ct);
}

export async function openFrame(
  keys: StreamKeys,
  sessionId: Uint8Array,
  stream: number,
  seq: number,
  ciphertext: Uint8Array
): Promise<Uint8Array> {
  checkSeq(seq);
  if (ciphertext.length < 16) {
    throw new ChannelCryptoError('sealed frame is shorter than its authentication tag');
  }
  try {
    const pt = await crypto.subtle.decrypt(
      { name: 'AES-GCM', iv: buf(frameNonce(keys.iv, seq)), additionalData: buf(frameAad(sessionId, stream, seq)) },
      keys.key,
      buf(ciphertext)
    );
    return new Uint8Array(pt);
  } catch (e) {
    throw new ChannelCryptoError(`frame ${seq} failed authentication`);
  }
}

/** What the owner signs in `finished` (section 4.4). */
export function ownerProofMessage(th: Uint8Array): Uint8Array {
  return concat(lp(LABEL.ownerProof), th);
}

/** What an owner signs to add `newOwnerPub` (section 5.1). */
export function ownerGrantMessage(sessionId: Uint8Array, newOwnerPub: Uint8Array): Uint8Array {
  checkPub(newOwnerPub, 'new owner key');
  return concat(lp(LABEL.ownerGrant), sessionId, newOwnerPub);
}

/** ECDSA P-256 SHA-256, 64-byte r||s (IEEE P1363, WebCrypto's own format). */
export async function sign(privateKey: CryptoKey, data: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, privateKey, buf(data)));
}

export async function verifySignature(pub: Uint8Array, sig: Uint8Array, data: Uint8Array): Promise<boolean> {
  checkPub(pub, 'owner key');
  if (sig.length !== SIGNATURE_SIZE) {
    return false;
  }
  const key = await crypto.subtle.importKey('raw', buf(pub), { name: 'ECDSA', namedCurve: 'P-256' }, false, ['verify']);
  return crypto.subtle.verify({ name: 'ECDSA', hash: 'SHA-256' }, key, buf(sig), buf(data));
}

/** Fingerprint: first 16 hex digits of SHA-256(owner_pub), grouped by four. */
export async function fingerprint(pub: Uint8Array): Promise<string> {
  const h = hex(await sha('SHA-256', pub)).slice(0, 16);
  return h.match(/.{4}/g)!.join(' ');
}
