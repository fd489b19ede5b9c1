/**
 * X.509 certificates and CRLs, parsed the way rustls-webpki (dcap-qvl's X.509 layer)
 * parses them, with signatures verified by WebCrypto over the exact received bytes.
 *
 * Only ECDSA (P-256/P-384 with SHA-256/SHA-384) is supported: Intel's SGX PKI and the
 * simulated PKI use nothing else. Anything else is rejected as unsupported.
 */

import { b64decode, buf, equal } from './bytes';
import {
  bitSet,
  bitStringBytes,
  Der,
  DerError,
  oidString,
  optionalBool,
  readTime,
  single,
  smallUint,
  TAG,
  Tlv
} from './der';

const OID_EC_PUBLIC_KEY = '1.2.840.10045.2.1';
const CURVES: Record<string, { name: 'P-256' | 'P-384'; size: number }> = {
  '1.2.840.10045.3.1.7': { name: 'P-256', size: 32 },
  '1.3.132.0.34': { name: 'P-384', size: 48 }
};
const SIG_HASH: Record<string, 'SHA-256' | 'SHA-384'> = {
  '1.2.840.10045.4.3.2': 'SHA-256',
  '1.2.840.10045.4.3.3': 'SHA-384'
};
export const OID_SGX_EXTENSION = '1.2.840.113741.1.13.1';
const OID_SERVER_AUTH = '1.3.6.1.5.5.7.3.1';

export class X509Error extends Error {}

/** PEM blocks -> DER, like the `pem` crate: text outside blocks is ignored. */
export function pemBlocks(text: string): Uint8Array[] {
  const out: Uint8Array[] = [];
  const re = /-----BEGIN ([^-\r\n]*)-----([\s\S]*?)-----END ([^-\r\n]*)-----/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(text)) !== null) {
    if (m[1] !== m[3]) {
      throw new X509Error(`PEM: mismatching BEGIN (${m[1]}) and END (${m[3]}) tags`);
    }
    const body = m[2].replace(/[\r\n\t ]/g, '');
    if (body.includes(':')) {
      throw new X509Error('PEM: headers are not supported');
    }
    out.push(b64decode(body, 'PEM body'));
  }
  return out;
}

export interface PublicKey {
  curve: 'P-256' | 'P-384';
  size: number;
  /** Uncompressed point 0x04 || x || y. */
  point: Uint8Array;
}

/** SubjectPublicKeyInfo (content of the SEQUENCE) -> EC key; throws for anything else. */
export function parseSpki(spki: Uint8Array): PublicKey {
  const r = new Der(spki);
  const alg = new Der(r.expect(TAG.SEQUENCE, 'SPKI algorithm').value);
  const bits = r.expect(TAG.BIT_STRING, 'SPKI key');
  r.end('SPKI');
  const algOid = oidString(alg.expect(TAG.OID, 'SPKI algorithm OID').value);
  if (algOid !== OID_EC_PUBLIC_KEY) {
    throw new X509Error(`unsupported public key algorithm ${algOid}`);
  }
  const curveOid = oidString(alg.expect(TAG.OID, 'SPKI curve').value);
  alg.end('SPKI algorithm');
  const curve = CURVES[curveOid];
  if (!curve) {
    throw new X509Error(`unsupported curve ${curveOid}`);
  }
  const point = bitStringBytes(bits.value, 'SPKI key');
  if (point.length !== 1 + 2 * curve.size || point[0] !== 0x04) {
    throw new X509Error('public key is not an uncompressed point');
  }
  return { curve: curve.name, size: curve.size, point };
}

async function importKey(key: PublicKey): Promise<CryptoKey> {
  return crypto.subtle.importKey(
    'raw',
    buf(key.point),
    { name: 'ECDSA', namedCurve: key.curve },
    false,
    ['verify']
  );
}

function stripZeros(b: Uint8Array): Uint8Array {
  let i = 0;
  while (i < b.length && b[i] === 0) {
    i++;
  }
  return b.subarray(i);
}

function toFixed(int: Uint8Array, size: number): Uint8Array | null {
  const v = stripZeros(int);
  if (v.length > size) {
    return null;
  }
  const out = new Uint8Array(size);
  out.set(v, size - v.length);
  return out;
}

/** DER Ecdsa-Sig-Value -> r||s, strictly (positive, minimal INTEGERs). */
function derSigToP1363(sig: Uint8Array, size: number): Uint8Array | null {
  try {
    const seq = new Der(single(sig, TAG.SEQUENCE, 'ECDSA signature').value);
    const parts: Uint8Array[] = [];
    for (const what of ['r', 's']) {
      const v = seq.expect(TAG.INTEGER, what).value;
      if (v.length === 0 || v[0] & 0x80 || (v.length > 1 && v[0] === 0 && !(v[1] & 0x80))) {
        return null;
      }
      const fixed = toFixed(v, size);
      if (!fixed) {
        return null;
      }
      parts.push(fixed);
    }
    seq.end('ECDSA signature');
    const out = new Uint8Array(2 * size);
    out.set(parts[0], 0);
    out.set(parts[1], size);
    return out;
  } catch (e) {
    return null;
  }
}

/**
 * Verify a raw r||s signature (as in quotes and collateral) with a P-256 key over SHA-256.
 * Like dcap-qvl, r is the first 32 bytes and s the rest; both are read as integers.
 */
export async function verifyRawP256(
  key: PublicKey,
  data: Uint8Array,
  rawSig: Uint8Array
): Promise<boolean> {
  if (key.curve !== 'P-256' || rawSig.length < 32) {
    return false;
  }
  const r = toFixed(rawSig.subarray(0, 32), 32);
  const s = toFixed(rawSig.subarray(32), 32);
  if (!r || !s) {
    return false;
  }
  const sig = new Uint8Array(64);
  sig.set(r, 0);
  sig.set(s, 32);
  return crypto.subtle.verify(
    { name: 'ECDSA', hash: 'SHA-256' },
    await importKey(key),
    buf(sig),
    buf(data)
  );
}

/** The signed part of a certificate or CRL. */
export interface SignedData {
  /** tbsCertificate / tbsCertList as received (tag + length + content). */
  data: Uint8Array;
  /** AlgorithmIdentifier content. */
  algorithm: Uint8Array;
  /** BIT STRING payload. */
  signature: Uint8Array;
}

function readSignedData(outer: Uint8Array, what: string): SignedData {
  const r = new Der(single(outer, TAG.SEQUENCE, what).value);
  const data = r.expect(TAG.SEQUENCE, `${what} TBS`).raw;
  const algorithm = r.expect(TAG.SEQUENCE, `${what} signature algorithm`).value;
  const signature = bitStringBytes(r.expect(TAG.BIT_STRING, `${what} signature`).value, 'signature');
  r.end(what);
  return { data, algorithm, signature };
}

/** Verify `signed` with the issuer's SPKI (content bytes), webpki style. */
export async function verifySigned(signed: SignedData, issuerSpki: Uint8Array): Promise<boolean> {
  let hash: 'SHA-256' | 'SHA-384' | undefined;
  try {
    const a = new Der(signed.algorithm);
    hash = SIG_HASH[oidString(a.expect(TAG.OID, 'signature algorithm').value)];
    a.end('signature algorithm (parameters must be absent)');
  } catch (e) {
    return false;
  }
  if (!hash) {
    return false;
  }
  let key: PublicKey;
  try {
    key = parseSpki(issuerSpki);
  } catch (e) {
    return false;
  }
  const sig = derSigToP1363(signed.signature, key.size);
  if (!sig) {
    return false;
  }
  return crypto.subtle.verify(
    { name: 'ECDSA', hash },
    await importKey(key),
    buf(sig),
    buf(signed.data)
  );
}

export interface DistributionPoint {
  uris: Uint8Array[] | null; // null = no full name
  hasReasons: boolean;
  hasCrlIssuer: boolean;
}

export interface Certificate {
  der: Uint8Array;
  signed: SignedData;
  serial: Uint8Array;
  issuer: Uint8Array;
  subject: Uint8Array;
  notBefore: number;
  notAfter: number;
  spki: Uint8Array;
  basicConstraints?: Uint8Array;
  keyUsage?: Uint8Array;
  eku?: Uint8Array;
  nameConstraints?: Uint8Array;
  crlDistributionPoints?: Uint8Array;
  /** Non-id-ce extensions by OID (value = OCTET STRING content), e.g. Intel's SGX extension. */
  other: Map<string, Uint8Array>;
}

interface Extension {
  oid: Uint8Array;
  critical: boolean;
  value: Uint8Array;
}

function readExtensions(list: Uint8Array, allowEmpty: boolean, what: string): Extension[] {
  const r = new Der(list);
  const out: Extension[] = [];
  while (!r.atEnd()) {
    const e = new Der(r.expect(TAG.SEQUENCE, `${what} extension`).value);
    const oid = e.expect(TAG.OID, 'extension OID').value;
    const critical = optionalBool(e, 'extension critical flag');
    const value = e.expect(TAG.OCTET_STRING, 'extension value').value;
    e.end('extension');
    out.push({ oid, critical, value });
  }
  if (!allowEmpty && out.length === 0) {
    throw new DerError(`DER: empty ${what} extensions`);
  }
  return out;
}

/** The id-ce arc (2.5.29.n with a one-byte n), as webpki recognises it. */
function idCe(oid: Uint8Array): number | undefined {
  return oid.length === 3 && oid[0] === 0x55 && oid[1] === 0x1d ? oid[2] : undefined;
}

function unsupported(ext: Extension, what: string): void {
  if (ext.critical) {
    throw new X509Error(`unsupported critical extension ${oidString(ext.oid)} in ${what}`);
  }
}

export function parseCertificate(der: Uint8Array): Certificate {
  const signed = readSignedData(der, 'certificate');
  const tbs = new Der(single(signed.data, TAG.SEQUENCE, 'TBS certificate').value);
  const version = new Der(tbs.expect(TAG.CTX0_CONSTRUCTED, 'certificate version').value);
  if (smallUint(version.expect(TAG.INTEGER, 'version').value, 'version', 255) !== 2) {
    throw new X509Error('only X.509 v3 certificates are supported');
  }
  version.end('version');
  const serial = tbs.expect(TAG.INTEGER, 'serial number').value;
  const sigAlg = tbs.expect(TAG.SEQUENCE, 'TBS signature algorithm').value;
  if (!equal(sigAlg, signed.algorithm)) {
    throw new X509Error('certificate signature algorithms do not match');
  }
  const issuer = tbs.expect(TAG.SEQUENCE, 'issuer').value;
  const validity = new Der(tbs.expect(TAG.SEQUENCE, 'validity').value);
  const subject = tbs.expect(TAG.SEQUENCE, 'subject').value;
  const spki = tbs.expect(TAG.SEQUENCE, 'subject public key info').value;
  const notBefore = readTime(validity, 'notBefore');
  const notAfter = readTime(validity, 'notAfter');
  validity.end('validity');
  const cert: Certificate = {
    der,
    signed,
    serial,
    issuer,
    subject,
    notBefore,
    notAfter,
    spki,
    other: new Map()
  };
  if (!tbs.atEnd()) {
    const wrapped = new Der(tbs.expect(TAG.CTX3_CONSTRUCTED, 'extensions').value);
    const list = wrapped.expect(TAG.SEQUENCE, 'extensions').value;
    wrapped.end('extensions');
    for (const ext of readExtensions(list, true, 'certificate')) {
      const id = idCe(ext.oid);
      const field = (
        { 15: 'keyUsage', 17: 'subjectAltName', 19: 'basicConstraints', 30: 'nameConstraints', 31: 'crlDistributionPoints', 37: 'eku' } as Record<number, string>
      )[id ?? -1];
      if (!field) {
        unsupported(ext, 'certificate');
        if (id === undefined) {
          cert.other.set(oidString(ext.oid), ext.value);
        }
        continue;
      }
      const slot = field as keyof Certificate;
      if ((cert as any)[slot] !== undefined) {
        throw new X509Error(`duplicate extension ${oidString(ext.oid)}`);
      }
      // keyUsage keeps the whole BIT STRING; the others must be exactly one SEQUENCE.
      (cert as any)[slot] =
        id === 15 ? ext.value : single(ext.value, TAG.SEQUENCE, `extension ${oidString(ext.oid)}`).value;
    }
  }
  tbs.end('TBS certificate');
  return cert;
}

/** BasicConstraints content -> [cA, pathLen]. */
export function basicConstraints(cert: Certificate): [boolean, number | undefined] {
  if (!cert.basicConstraints) {
    return [false, undefined];
  }
  const r = new Der(cert.basicConstraints);
  const ca = optionalBool(r, 'cA');
  const pathLen = r.atEnd() ? undefined : smallUint(r.expect(TAG.INTEGER, 'pathLen').value, 'pathLen', 255);
  r.end('basicConstraints');
  return [ca, pathLen];
}

/** webpki's "server auth if EKU present" rule. */
export function ekuAllowsServerAuth(cert: Certificate): boolean {
  if (!cert.eku) {
    return true;
  }
  const r = new Der(cert.eku);
  while (!r.atEnd()) {
    if (oidString(r.expect(TAG.OID, 'EKU').value) === OID_SERVER_AUTH) {
      return true;
    }
  }
  return false;
}

function generalNameUris(list: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  const r = new Der(list);
  while (!r.atEnd()) {
    const el = r.read();
    if (el.tag === 0x86) {
      out.push(el.value);
    }
  }
  return out;
}

/** DistributionPointName -> URIs of a fullName, or null (nameRelativeToCRLIssuer). */
function distributionPointName(value: Uint8Array): Uint8Array[] | null {
  const el = single(value, value[0], 'distribution point name');
  if (el.tag === 0xa0) {
    return generalNameUris(el.value);
  }
  if (el.tag === 0xa1) {
    return null;
  }
  throw new DerError('DER: bad distribution point name');
}

export function crlDistributionPoints(cert: Certificate): DistributionPoint[] | undefined {
  if (!cert.crlDistributionPoints) {
    return undefined;
  }
  const out: DistributionPoint[] = [];
  const r = new Der(cert.crlDistributionPoints);
  while (!r.atEnd()) {
    const dp = new Der(r.expect(TAG.SEQUENCE, 'distribution point').value);
    const point: DistributionPoint = { uris: null, hasReasons: false, hasCrlIssuer: false };
    while (!dp.atEnd()) {
      const el = dp.read();
      if (el.tag === 0xa0) {
        point.uris = distributionPointName(el.value);
      } else if (el.tag === 0x81) {
        point.hasReasons = true;
      } else if (el.tag === 0xa2) {
        point.hasCrlIssuer = true;
      } else {
        throw new DerError('DER: bad distribution point');
      }
    }
    out.push(point);
  }
  return out;
}

export interface IssuingDistributionPoint {
  uris: Uint8Array[];
  onlyUser: boolean;
  onlyCa: boolean;
}

export interface Crl {
  signed: SignedData;
  issuer: Uint8Array;
  thisUpdate: number;
  nextUpdate: number;
  revoked: Uint8Array[];
  idp?: IssuingDistributionPoint;
}

function idpBool(value: Uint8Array): boolean {
  if (value.length !== 1 || (value[0] !== 0xff && value[0] !== 0)) {
    throw new DerError('DER: bad boolean in issuing distribution point');
  }
  return value[0] === 0xff;
}

function parseIdp(value: Uint8Array): IssuingDistributionPoint {
  const r = new Der(single(value, TAG.SEQUENCE, 'issuing distribution point').value);
  let uris: Uint8Array[] | null | undefined;
  let onlyUser = false;
  let onlyCa = false;
  while (!r.atEnd()) {
    const el = r.read();
    switch (el.tag) {
      case 0xa0:
        if (uris !== undefined) {
          throw new X509Error('duplicate IDP distribution point');
        }
        uris = distributionPointName(el.value);
        break;
      case 0x81:
        onlyUser = idpBool(el.value);
        break;
      case 0x82:
        onlyCa = idpBool(el.value);
        break;
      case 0x83:
        throw new X509Error('CRLs partitioned by revocation reason are not supported');
      case 0x84:
        if (idpBool(el.value)) {
          throw new X509Error('indirect CRLs are not supported');
        }
        break;
      case 0x85:
        if (idpBool(el.value)) {
          throw new X509Error('attribute certificate CRLs are not supported');
        }
        break;
      default:
        throw new DerError('DER: bad issuing distribution point');
    }
  }
  if (!uris) {
    throw new X509Error('unsupported CRL issuing distribution point');
  }
  return { uris, onlyUser, onlyCa };
}

export function parseCrl(der: Uint8Array): Crl {
  const signed = readSignedData(der, 'CRL');
  const tbs = new Der(single(signed.data, TAG.SEQUENCE, 'TBS CRL').value);
  if (smallUint(tbs.expect(TAG.INTEGER, 'CRL version').value, 'CRL version', 255) !== 1) {
    throw new X509Error('only v2 CRLs are supported');
  }
  if (!equal(tbs.expect(TAG.SEQUENCE, 'CRL signature algorithm').value, signed.algorithm)) {
    throw new X509Error('CRL signature algorithms do not match');
  }
  const issuer = tbs.expect(TAG.SEQUENCE, 'CRL issuer').value;
  const thisUpdate = readTime(tbs, 'thisUpdate');
  const nextUpdate = readTime(tbs, 'nextUpdate');
  const revoked: Uint8Array[] = [];
  const list = tbs.optional(TAG.SEQUENCE, 'revoked certificates');
  if (list) {
    const r = new Der(list.value);
    while (!r.atEnd()) {
      const entry = new Der(r.expect(TAG.SEQUENCE, 'revoked certificate').value);
      revoked.push(entry.expect(TAG.INTEGER, 'revoked serial').value);
      readTime(entry, 'revocation date');
      if (!entry.atEnd()) {
        for (const ext of readExtensions(entry.expect(TAG.SEQUENCE, 'entry extensions').value, false, 'CRL entry')) {
          const id = idCe(ext.oid);
          if (id === 29) {
            throw new X509Error('indirect CRLs are not supported');
          }
          if (id !== 21 && id !== 24) {
            unsupported(ext, 'CRL entry');
          }
        }
      }
      entry.end('revoked certificate');
    }
  }
  const wrapped = new Der(tbs.expect(TAG.CTX0_CONSTRUCTED, 'CRL extensions').value);
  const extList = wrapped.expect(TAG.SEQUENCE, 'CRL extensions').value;
  wrapped.end('CRL extensions');
  const crl: Crl = { signed, issuer, thisUpdate, nextUpdate, revoked };
  for (const ext of readExtensions(extList, false, 'CRL')) {
    const id = idCe(ext.oid);
    if (id === 20) {
      const n = single(ext.value, TAG.INTEGER, 'CRL number').value;
      if (n.length === 0 || n[0] & 0x80 || n.length > 21) {
        throw new X509Error('invalid CRL number');
      }
    } else if (id === 27) {
      throw new X509Error('delta CRLs are not supported');
    } else if (id === 28) {
      if (crl.idp) {
        throw new X509Error('duplicate issuing distribution point');
      }
      crl.idp = parseIdp(ext.value);
    } else if (id !== 35) {
      unsupported(ext, 'CRL');
    }
  }
  tbs.end('TBS CRL');
  return crl;
}

/** Whether `crl` speaks for `cert` (issuer and issuing distribution point), as webpki decides. */
export function crlIsAuthoritative(crl: Crl, cert: Certificate, certIsCa: boolean): boolean {
  if (!equal(crl.issuer, cert.issuer)) {
    return false;
  }
  if (!crl.idp) {
    return true;
  }
  if ((crl.idp.onlyCa && !certIsCa) || (crl.idp.onlyUser && certIsCa)) {
    return false;
  }
  let dps: DistributionPoint[] | undefined;
  try {
    dps = crlDistributionPoints(cert);
  } catch (e) {
    return false;
  }
  if (!dps) {
    return true;
  }
  for (const dp of dps) {
    if (dp.hasCrlIssuer || dp.hasReasons || !dp.uris) {
      return false;
    }
    for (const uri of crl.idp.uris) {
      if (dp.uris.some(other => equal(uri, other))) {
        return true;
      }
    }
  }
  return false;
}

/** keyUsage cRLSign (bit 6) if keyUsage is present. */
export function mayIssueCrls(keyUsage: Uint8Array | undefined): boolean {
  if (!keyUsage) {
    return true;
  }
  return bitSet(single(keyUsage, TAG.BIT_STRING, 'keyUsage').value, 6, 'keyUsage');
}

export type { Tlv };
