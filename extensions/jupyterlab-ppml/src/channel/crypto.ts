/**
 * `ppml-attest/1` cryptography on WebCrypto, byte-identical to
 * `ppml_kernel.channel.crypto` (tests/data/channel-vectors.json pins both).
 */

import { buf, concat, lp, u64be, utf8 } from '../dcap/bytes';

export const PROTOCOL = 'ppml-attest/1';
export const NONCE_SIZE = 32;
export const PUBLIC_KEY_SIZE = 65;
export const MAX_SEQ = 2 ** 32 - 1;
export const DIR_B2K = 1;
export const DIR_K2B = 2;

const LABEL = {
  reportData: utf8('ppml-attest/1 report-data'),
  transcript: utf8('ppml-attest/1 transcript'),
  frame: utf8('ppml-attest/1 frame'),
  b2kKey: utf8('ppml-attest/1 b2k key'),
  b2kIv: utf8('ppml-attest/1 b2k iv'),
  k2bKey: utf8('ppml-attest/1 k2b key'),
  k2bIv: utf8('ppml-attest/1 k2b iv')
};

export class ChannelCryptoError extends Error {}

export async function reportData(nonce: Uint8Array, browserPub: Uint8Array, enclavePub: Uint8Array): Promise<Uint8Array> {
  if (nonce.length !== NONCE_SIZE) {
    throw new ChannelCryptoError(`nonce must be ${NONCE_SIZE} bytes`);
  }
  const data = concat(lp(LABEL.reportData), lp(nonce), lp(browserPub), lp(enclavePub));
  return new Uint8Array(await crypto.subtle.digest('SHA-512', buf(data)));
}

export async function transcriptHash(
  nonce: Uint8Array,
  browserPub: Uint8Array,
  enclavePub: Uint8Array,
  quote: Uint8Array
): Promise<Uint8Array> {
  const data = concat(lp(LABEL.transcript), lp(nonce), lp(browserPub), lp(enclavePub), lp(quote));
  return new Uint8Array(await crypto.subtle.digest('SHA-256', buf(data)));
}

export interface DirectionKeys {
  key: CryptoKey;
  iv: Uint8Array;
}

export interface SessionKeys {
  sessionId: Uint8Array;
  transcriptHash: Uint8Array;
  b2k: DirectionKeys;
  k2b: DirectionKeys;
  /** Raw key bytes, only when derived with `exportable` (test vectors). */
  raw?: { b2kKey: Uint8Array; k2bKey: Uint8Array };
}

/** A fresh ephemeral ECDH P-256 key pair (private key not extractable). */
export async function generateKeyPair(): Promise<CryptoKeyPair> {
  return crypto.subtle.generateKey({ name: 'ECDH', namedCurve: 'P-256' }, false, ['deriveBits']);
}

export async function exportPublic(key: CryptoKey): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.exportKey('raw', key));
}

export async function importPublic(raw: Uint8Array, what: string): Promise<CryptoKey> {
  if (raw.length !== PUBLIC_KEY_SIZE || raw[0] !== 4) {
    throw new ChannelCryptoError(`${what} must be a 65-byte uncompressed P-256 point`);
  }
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

/** HKDF-SHA-256 with the transcript hash as salt, into two independent directions. */
export async function deriveSessionKeys(shared: Uint8Array, th: Uint8Array, exportable = false): Promise<SessionKeys> {
  const ikm = await crypto.subtle.importKey('raw', buf(shared), 'HKDF', false, ['deriveBits']);
  const b2kKey = await hkdf(ikm, th, LABEL.b2kKey, 32);
  const k2bKey = await hkdf(ikm, th, LABEL.k2bKey, 32);
  const aes = (raw: Uint8Array): Promise<CryptoKey> =>
    crypto.subtle.importKey('raw', buf(raw), 'AES-GCM', false, ['encrypt', 'decrypt']);
  const keys: SessionKeys = {
    sessionId: th.slice(0, 16),
    transcriptHash: th,
    b2k: { key: await aes(b2kKey), iv: await hkdf(ikm, th, LABEL.b2kIv, 12) },
    k2b: { key: await aes(k2bKey), iv: await hkdf(ikm, th, LABEL.k2bIv, 12) }
  };
  if (exportable) {
    keys.raw = { b2kKey, k2bKey };
  } else {
    b2kKey.fill(0);
    k2bKey.fill(0);
  }
  return keys;
}

export function frameNonce(iv: Uint8Array, seq: number): Uint8Array {
  const counter = concat(new Uint8Array(4), u64be(seq));
  return iv.map((b, i) => b ^ counter[i]);
}

export function frameAad(sessionId: Uint8Array, direction: number, seq: number): Uint8Array {
  return concat(lp(LABEL.frame), sessionId, new Uint8Array([direction]), u64be(seq));
}

function checkSeq(seq: number): void {
  if (!Number.isInteger(seq) || seq < 0 || seq > MAX_SEQ) {
    throw new ChannelCryptoError(`sequence number ${seq} is out of range`);
  }
}

export async function seal(
  keys: DirectionKeys,
  sessionId: Uint8Array,
  direction: number,
  seq: number,
  plaintext: Uint8Array
): Promise<Uint8Array> {
  checkSeq(seq);
  const ct = await crypto.subtle.encrypt(
    { name: 'AES-GCM', iv: buf(frameNonce(keys.iv, seq)), additionalData: buf(frameAad(sessionId, direction, seq)) },
    keys.key,
    buf(plaintext)
  );
  return new Uint8Array(ct);
}

export async function openFrame(
  keys: DirectionKeys,
  sessionId: Uint8Array,
  direction: number,
  seq: number,
  ciphertext: Uint8Array
): Promise<Uint8Array> {
  checkSeq(seq);
  if (ciphertext.length < 16) {
    throw new ChannelCryptoError('sealed frame is shorter than its authentication tag');
  }
  try {
    const pt = await crypto.subtle.decrypt(
      { name: 'AES-GCM', iv: buf(frameNonce(keys.iv, seq)), additionalData: buf(frameAad(sessionId, direction, seq)) },
      keys.key,
      buf(ciphertext)
    );
    return new Uint8Array(pt);
  } catch (e) {
    throw new ChannelCryptoError(`frame ${seq} failed authentication`);
  }
}
