/**
 * Full DCAP quote verification on WebCrypto, step for step as dcap-qvl (0.7) does it,
 * so the browser reaches the same verdict as the kernel-side Python verifier:
 *
 *  0. the trust anchor (Intel's SGX root unless a root is passed explicitly) and the
 *     root CA CRL (signed by the root, current, root not revoked); both CRLs parse
 *  1. quote header (version, QE vendor, TEE type, attestation key type)
 *  2. TCB Info: validity window, signing chain (with CRLs), signature over exact bytes
 *  3. QE Identity: the same, and the id/version for the TEE type
 *  4. PCK chain from the quote (or the collateral) to the anchor, with CRLs
 *  5. QE report signed by the PCK key; QE REPORT_DATA = SHA-256(attestation key || auth data)
 *  6. QE report against QE Identity (MRSIGNER, ISVPRODID, masked MISCSELECT/ATTRIBUTES,
 *     QE TCB level)
 *  7. report body signed by the attestation key
 *  8. platform TCB level from the PCK certificate's FMSPC/CPUSVN/PCESVN (and TDX SVNs,
 *     TDX module identity)
 *  9. merged status (Revoked fails) and attributes (debug enclaves fail)
 */

import { buf, concat, equal, fromHex, hex } from './bytes';
import { Anchor, verifyChain } from './chain';
import {
  Collateral,
  IsvTcbLevel,
  parseCollateral,
  parseQeIdentity,
  parseTcbInfo,
  QeIdentity,
  rfc3339,
  TcbInfo,
  TcbLevel,
  TcbStatus
} from './collateral';
import { Der, oidString, single, TAG } from './der';
import { INTEL_ROOT_CA_DER } from './roots';
import { EnclaveReport, measurements, parseEnclaveReport, parseQuote, Quote, TdReport, TEE_SGX, TEE_TDX } from './quote';
import {
  Certificate,
  Crl,
  crlIsAuthoritative,
  OID_SGX_EXTENSION,
  parseCertificate,
  parseCrl,
  parseSpki,
  pemBlocks,
  PublicKey,
  verifyRawP256,
  verifySigned
} from './x509';

export const INTEL_QE_VENDOR_ID = fromHex('939a7233f79c4ca9940a0db3957f0607');

export class VerificationError extends Error {
  constructor(
    readonly step: string,
    message: string
  ) {
    super(`${step}: ${message}`);
  }
}

export interface StatusWithAdvisories {
  status: TcbStatus;
  advisoryIds: string[];
}

export interface VerifiedReport {
  status: TcbStatus;
  advisoryIds: string[];
  platformStatus: StatusWithAdvisories;
  qeStatus: StatusWithAdvisories;
  tee: 'SGX' | 'TDX';
  quote: Quote;
  measurements: Record<string, string | number>;
  fmspc: string;
  ppid: string;
  /** SHA-256 of the trust anchor that verified the quote. */
  rootSha256: string;
  /** True when the anchor is Intel's SGX root CA. */
  intelRoot: boolean;
  verifiedAt: number;
}

export interface VerifyOptions {
  /** Verification time, Unix seconds. */
  now: number;
  /** DER of a root to use instead of Intel's. Only ever pass one the user chose to trust. */
  rootDer?: Uint8Array;
}

function fail(step: string, message: string): never {
  throw new VerificationError(step, message);
}

async function attempt<T>(step: string, f: () => T | Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    if (e instanceof VerificationError) {
      throw e;
    }
    fail(step, (e as Error).message);
  }
}

export async function sha256(data: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest('SHA-256', buf(data)));
}

function rawP256(key64: Uint8Array): PublicKey {
  return { curve: 'P-256', size: 32, point: concat(new Uint8Array([4]), key64) };
}

function leafKey(cert: Certificate, step: string): PublicKey {
  const key = parseSpki(cert.spki);
  if (key.curve !== 'P-256') {
    fail(step, 'signing certificate key is not P-256');
  }
  return key;
}

/** Check a signed collateral document: window, chain and signature. */
async function verifyDocument(
  step: string,
  issueDate: string,
  nextUpdate: string,
  chainPem: string,
  body: string,
  signature: Uint8Array,
  anchor: Anchor,
  crls: Crl[],
  now: number
): Promise<void> {
  const issued = await attempt(step, () => rfc3339(issueDate, 'issueDate'));
  const next = await attempt(step, () => rfc3339(nextUpdate, 'nextUpdate'));
  if (now < issued) {
    fail(step, 'issue date is in the future');
  }
  if (now > next) {
    fail(step, 'expired (past nextUpdate)');
  }
  const certs = await attempt(step, () => pemBlocks(chainPem));
  if (certs.length < 1) {
    fail(step, 'certificate chain is too short');
  }
  const leaf = await attempt(step, () => parseCertificate(certs[0]));
  await attempt(step, () => verifyChain(leaf, certs.slice(1), anchor, crls, now));
  if (!(await verifyRawP256(leafKey(leaf, step), new TextEncoder().encode(body), signature))) {
    fail(step, 'signature is invalid');
  }
}

interface PckExtension {
  ppid: Uint8Array;
  cpuSvn: Uint8Array;
  pceSvn: number;
  fmspc: Uint8Array;
}

function statusOf(level: StatusWithAdvisories): StatusWithAdvisories {
  return { status: level.status, advisoryIds: [...level.advisoryIds] };
}

/** The first (highest) ISVSVN-keyed level the enclave's ISVSVN reaches. */
function isvLevel(levels: IsvTcbLevel[], isvsvn: number, what: string, levelsName: string): StatusWithAdvisories {
  const level = levels.find(l => isvsvn >= l.isvsvn);
  if (!level) {
    throw new Error(`${what} ISVSVN ${isvsvn} is below every ${levelsName}`);
  }
  return statusOf(level);
}

function findIn(seq: Uint8Array, oid: string): Uint8Array | undefined {
  const r = new Der(seq);
  while (!r.atEnd()) {
    const entry = new Der(r.expect(TAG.SEQUENCE, 'SGX extension entry').value);
    const name = entry.read();
    const value = entry.read();
    if (name.tag === TAG.OID && oidString(name.value) === oid) {
      return value.value;
    }
  }
  return undefined;
}

/** Intel's SGX extension in the PCK certificate (FMSPC, CPUSVN, PCESVN, PPID). */
export function parsePckExtension(cert: Certificate): PckExtension {
  const raw = cert.other.get(OID_SGX_EXTENSION);
  if (!raw) {
    throw new Error('Intel SGX extension not found in the PCK certificate');
  }
  const top = single(raw, TAG.SEQUENCE, 'SGX extension').value;
  const need = (v: Uint8Array | undefined, what: string): Uint8Array => {
    if (!v) {
      throw new Error(`SGX extension: ${what} is missing`);
    }
    return v;
  };
  const ppid = need(findIn(top, `${OID_SGX_EXTENSION}.1`), 'PPID');
  const tcb = need(findIn(top, `${OID_SGX_EXTENSION}.2`), 'TCB');
  const cpuSvn = need(findIn(tcb, `${OID_SGX_EXTENSION}.2.18`), 'CPUSVN');
  const pce = need(findIn(tcb, `${OID_SGX_EXTENSION}.2.17`), 'PCESVN');
  need(findIn(top, `${OID_SGX_EXTENSION}.3`), 'PCE-ID');
  const fmspc = need(findIn(top, `${OID_SGX_EXTENSION}.4`), 'FMSPC');
  need(findIn(top, `${OID_SGX_EXTENSION}.5`), 'SGX type');
  if (cpuSvn.length !== 16) {
    throw new Error('SGX extension: CPUSVN must be 16 bytes');
  }
  if (fmspc.length !== 6) {
    throw new Error('SGX extension: FMSPC must be 6 bytes');
  }
  if (pce.length !== 1 && pce.length !== 2) {
    throw new Error('SGX extension: bad PCESVN length');
  }
  const pceSvn = pce.length === 1 ? pce[0] : (pce[0] << 8) | pce[1];
  return { ppid, cpuSvn, pceSvn, fmspc };
}

function compareArrays(a: number[], b: number[]): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    if (a[i] !== b[i]) {
      return a[i] - b[i];
    }
  }
  return a.length - b.length;
}

/** Order TCB levels as Intel's QVL and dcap-qvl do (highest first; stable). */
function canonicalize(info: TcbInfo): TcbLevel[] {
  const tdx = info.version >= 3 && info.id === 'TDX';
  return [...info.tcbLevels].sort(
    (a, b) =>
      compareArrays(b.sgxComponents, a.sgxComponents) ||
      b.pceSvn - a.pceSvn ||
      (tdx ? compareArrays(b.tdxComponents, a.tdxComponents) : 0)
  );
}

/** Advisory ids of both: the first's in order, then the second's new ones. */
function advisoryUnion(a: StatusWithAdvisories, b: StatusWithAdvisories): string[] {
  const advisoryIds = [...a.advisoryIds];
  for (const id of b.advisoryIds) {
    if (!advisoryIds.includes(id)) {
      advisoryIds.push(id);
    }
  }
  return advisoryIds;
}

/**
 * Platform status with the QE's, as dcap-qvl 0.7 (after Intel's QVL) converges them: an
 * OutOfDate QE makes an up-to-date platform OutOfDate and a platform needing
 * configuration OutOfDateConfigurationNeeded; a Revoked QE revokes; a QE level with
 * SWHardeningNeeded or ConfigurationAndSWHardeningNeeded is not a QE status (error);
 * any other QE status leaves the platform's. Advisories: the platform's, then the QE's.
 */
export function convergeQeStatus(platform: StatusWithAdvisories, qe: StatusWithAdvisories): StatusWithAdvisories {
  if (qe.status === 'SWHardeningNeeded' || qe.status === 'ConfigurationAndSWHardeningNeeded') {
    throw new VerificationError('QE Identity', `unrecognized QE TCB status ${qe.status}`);
  }
  return converge(platform, qe);
}

/**
 * Platform status with the TDX module identity's, as dcap-qvl 0.7 does it: UpToDate keeps
 * the platform's, OutOfDate and Revoked as for the QE; any other module status is an error.
 */
export function convergeModuleStatus(platform: StatusWithAdvisories, module: StatusWithAdvisories): StatusWithAdvisories {
  if (module.status !== 'UpToDate' && module.status !== 'OutOfDate' && module.status !== 'Revoked') {
    throw new Error(`unrecognized TDX module TCB status ${module.status}`);
  }
  return converge(platform, module);
}

function converge(platform: StatusWithAdvisories, other: StatusWithAdvisories): StatusWithAdvisories {
  let status = platform.status;
  if (other.status === 'Revoked') {
    status = 'Revoked';
  } else if (other.status === 'OutOfDate') {
    if (status === 'UpToDate' || status === 'SWHardeningNeeded') {
      status = 'OutOfDate';
    } else if (status === 'ConfigurationNeeded' || status === 'ConfigurationAndSWHardeningNeeded') {
      status = 'OutOfDateConfigurationNeeded';
    }
  }
  return { status, advisoryIds: advisoryUnion(platform, other) };
}

function hexN(text: string, n: number, what: string): Uint8Array {
  const v = fromHex(text, what);
  if (v.length !== n) {
    throw new Error(`${what} has invalid length ${v.length}, expected ${n}`);
  }
  return v;
}

function matchTdxModule(info: TcbInfo, td: TdReport): StatusWithAdvisories | undefined {
  if (info.id !== 'TDX' || info.version < 3) {
    return undefined;
  }
  const isvsvn = td.teeTcbSvn[0];
  const version = td.teeTcbSvn[1];
  if (!info.tdxModule) {
    throw new Error('TDX TCB Info is missing tdxModule');
  }
  let mrsigner = hexN(info.tdxModule.mrsigner, 48, 'tdxModule.mrsigner');
  let attributes = hexN(info.tdxModule.attributes, 8, 'tdxModule.attributes');
  let mask = hexN(info.tdxModule.attributesMask, 8, 'tdxModule.attributesMask');
  let levels: IsvTcbLevel[] | undefined;
  if (version > 0) {
    const wanted = `TDX_${version.toString(16).toUpperCase().padStart(2, '0')}`;
    const identity = info.tdxModuleIdentities.find(i => i.id.toUpperCase() === wanted);
    if (!identity) {
      throw new Error(`no TDX module identity ${wanted} in TCB Info`);
    }
    mrsigner = hexN(identity.mrsigner, 48, 'tdxModuleIdentity.mrsigner');
    attributes = hexN(identity.attributes, 8, 'tdxModuleIdentity.attributes');
    mask = hexN(identity.attributesMask, 8, 'tdxModuleIdentity.attributesMask');
    levels = identity.tcbLevels;
  }
  if (!equal(td.mrSignerSeam, mrsigner)) {
    throw new Error('TDX module MRSIGNER mismatch');
  }
  for (let i = 0; i < 8; i++) {
    if ((attributes[i] & mask[i]) !== (td.seamAttributes[i] & mask[i])) {
      throw new Error('TDX module SEAMATTRIBUTES mismatch');
    }
    if (td.seamAttributes[i] & ~mask[i] & 0xff) {
      throw new Error('TDX module SEAMATTRIBUTES has bits outside the mask');
    }
  }
  if (!levels) {
    return undefined;
  }
  const level = levels.find(l => isvsvn >= l.isvsvn);
  if (level) {
    rfc3339(level.tcbDate, 'TDX module tcbDate');
  }
  return isvLevel(levels, isvsvn, 'TDX module', 'TCB level');
}

function matchPlatformTcb(
  info: TcbInfo,
  quote: Quote,
  tdx: boolean,
  pck: PckExtension
): StatusWithAdvisories {
  if (!equal(pck.fmspc, fromHex(info.fmspc, 'TCB Info fmspc'))) {
    throw new Error('FMSPC of the PCK certificate does not match the TCB Info');
  }
  if (tdx ? info.version < 3 || info.id !== 'TDX' : info.version < 2 || info.id !== 'SGX') {
    throw new Error(`${tdx ? 'TDX' : 'SGX'} quote with TCB Info of another kind`);
  }
  for (const level of canonicalize(info)) {
    if (pck.pceSvn < level.pceSvn) {
      continue;
    }
    if (level.sgxComponents.length !== pck.cpuSvn.length) {
      throw new Error('SGX TCB component count mismatch');
    }
    if (level.sgxComponents.some((c, i) => pck.cpuSvn[i] < c)) {
      continue;
    }
    if (tdx) {
      const td = quote.report as TdReport;
      if (level.tdxComponents.length !== td.teeTcbSvn.length) {
        throw new Error('TDX TCB component count mismatch');
      }
      // With a TDX module version (TEE_TCB_SVN[1] > 0), components 0 and 1 are the
      // module's and are judged by its identity instead (as dcap-qvl and Intel's QVL do).
      const first = td.teeTcbSvn[1] > 0 ? 2 : 0;
      if (level.tdxComponents.some((c, i) => i >= first && td.teeTcbSvn[i] < c)) {
        continue;
      }
    }
    let status = statusOf(level);
    if (tdx) {
      // dcap-qvl reads the matched TDX levels' dates (SGX ones it never parses).
      rfc3339(level.tcbDate, 'TCB level tcbDate');
      const module = matchTdxModule(info, quote.report as TdReport);
      if (module) {
        status = convergeModuleStatus(status, module);
      }
    }
    return status;
  }
  throw new Error('no matching TCB level found');
}

function matchQe(qe: EnclaveReport, id: QeIdentity): StatusWithAdvisories {
  if (!equal(qe.mrSigner, id.mrsigner)) {
    throw new Error('QE MRSIGNER mismatch');
  }
  if (qe.attributes[0] & 0x02) {
    throw new Error('QE is a debug enclave');
  }
  if (qe.isvProdId !== id.isvprodid) {
    throw new Error('QE ISVPRODID mismatch');
  }
  const le = (b: Uint8Array): number => (b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24)) >>> 0;
  const mask = le(id.miscselectMask);
  if (((qe.miscSelect & mask) >>> 0) !== ((le(id.miscselect) & mask) >>> 0)) {
    throw new Error('QE MISCSELECT mismatch');
  }
  for (let i = 0; i < 16; i++) {
    if ((qe.attributes[i] & id.attributesMask[i]) !== (id.attributes[i] & id.attributesMask[i])) {
      throw new Error('QE ATTRIBUTES mismatch');
    }
  }
  return isvLevel(id.tcbLevels, qe.isvSvn, 'QE', 'QE TCB level');
}

function checkAttributes(quote: Quote): void {
  const rep = quote.report;
  if (rep.kind === 'SGX') {
    if (rep.attributes[0] & 0x02) {
      throw new Error('debug enclaves are not accepted (ATTRIBUTES.DEBUG is set)');
    }
    return;
  }
  if (rep.kind === 'TD15' && rep.mrServiceTd && rep.mrServiceTd.some(b => b !== 0)) {
    throw new Error('MRSERVICETD must be zero');
  }
  const a = rep.tdAttributes;
  if (a[0] & 0xfe) {
    throw new Error('reserved TD attribute bits are set');
  }
  if (a[0] & 0x01) {
    throw new Error('debug TDs are not accepted (TDATTRIBUTES.DEBUG is set)');
  }
  const reservedLower = a[1] | a[2] | (a[3] & 0x0f);
  // dcap-qvl's reading of the OTHER bits (bytes 4..7): everything but byte 4 bit 7.
  const reservedOther = (a[4] & 0x7f) | a[5] | a[6] | a[7];
  if (reservedLower || a[3] & 0x20 || reservedOther) {
    throw new Error('reserved TD attribute bits are set');
  }
  if (!(a[3] & 0x10)) {
    throw new Error('SEPT_VE_DISABLE is not set');
  }
}

/** Verify a DCAP quote; resolve to the report or reject with a VerificationError. */
export async function verifyQuote(
  rawQuote: Uint8Array,
  collateralInput: string | Record<string, unknown> | Collateral,
  options: VerifyOptions
): Promise<VerifiedReport> {
  const now = Math.floor(options.now);
  const rootDer = options.rootDer ?? INTEL_ROOT_CA_DER;
  const collateral =
    typeof collateralInput === 'object' && 'rootCaCrl' in collateralInput
      ? (collateralInput as Collateral)
      : await attempt('collateral', () => parseCollateral(collateralInput as string));

  // 0. Trust anchor and CRLs
  const root = await attempt('trust anchor', () => parseCertificate(rootDer));
  const anchor: Anchor = { subject: root.subject, spki: root.spki };
  const rootCrl = await attempt('root CA CRL', () => parseCrl(collateral.rootCaCrl));
  if (!(await verifySigned(rootCrl.signed, root.spki))) {
    fail('root CA CRL', 'not signed by the trust anchor');
  }
  if (!crlIsAuthoritative(rootCrl, root, true)) {
    fail('root CA CRL', 'not issued by the trust anchor');
  }
  if (now >= rootCrl.nextUpdate) {
    fail('root CA CRL', 'expired (past nextUpdate)');
  }
  if (rootCrl.revoked.some(s => equal(s, root.serial))) {
    fail('root CA CRL', 'the trust anchor is revoked');
  }
  const pckCrl = await attempt('PCK CRL', () => parseCrl(collateral.pckCrl));
  const crls = [rootCrl, pckCrl];

  // 1. Quote header
  const quote = await attempt('quote', () => parseQuote(rawQuote));
  const h = quote.header;
  if (!equal(h.qeVendorId, INTEL_QE_VENDOR_ID)) {
    fail('quote', 'unknown QE vendor id');
  }
  if (h.teeType !== TEE_SGX && h.teeType !== TEE_TDX) {
    fail('quote', `unsupported TEE type ${h.teeType}`);
  }
  const tdx = h.teeType === TEE_TDX;
  if (!tdx && h.version !== 3) {
    fail('quote', 'SGX quotes must be version 3');
  }
  if (tdx && h.version !== 4 && h.version !== 5) {
    fail('quote', 'TDX quotes must be version 4 or 5');
  }
  if (h.attestationKeyType !== 2) {
    fail('quote', 'unsupported attestation key type');
  }
  const auth = quote.authData;

  // 2. TCB Info
  const tcbInfo = await attempt('TCB Info', () => parseTcbInfo(collateral.tcbInfo));
  await verifyDocument(
    'TCB Info', tcbInfo.issueDate, tcbInfo.nextUpdate, collateral.tcbInfoIssuerChain,
    collateral.tcbInfo, collateral.tcbInfoSignature, anchor, crls, now
  );

  // 3. QE Identity
  const qeIdentity = await attempt('QE Identity', () => parseQeIdentity(collateral.qeIdentity));
  await verifyDocument(
    'QE Identity', qeIdentity.issueDate, qeIdentity.nextUpdate, collateral.qeIdentityIssuerChain,
    collateral.qeIdentity, collateral.qeIdentitySignature, anchor, crls, now
  );
  const [qeId, qeVersions] = tdx ? ['TD_QE', [2, 3]] : ['QE', [2]];
  if (qeIdentity.id !== qeId || !qeVersions.includes(qeIdentity.version)) {
    fail('QE Identity', `id/version ${qeIdentity.id} v${qeIdentity.version} does not fit a ${tdx ? 'TDX' : 'SGX'} quote`);
  }

  // 4. PCK chain
  let pckPem: string;
  if (collateral.pckCertificateChain !== undefined) {
    pckPem = collateral.pckCertificateChain;
  } else if (auth.certType === 5) {
    pckPem = new TextDecoder('utf-8', { fatal: false }).decode(auth.certData);
  } else {
    fail('PCK chain', `unsupported certification data type ${auth.certType}`);
  }
  const pckCerts = await attempt('PCK chain', () => pemBlocks(pckPem));
  if (pckCerts.length < 1) {
    fail('PCK chain', 'certificate chain is too short');
  }
  const pckLeaf = await attempt('PCK chain', () => parseCertificate(pckCerts[0]));
  await attempt('PCK chain', () => verifyChain(pckLeaf, pckCerts.slice(1), anchor, crls, now));
  const pck = await attempt('PCK certificate', () => parsePckExtension(pckLeaf));

  // 5. QE report signature and binding
  const pckKey = leafKey(pckLeaf, 'QE report');
  if (!(await verifyRawP256(pckKey, auth.qeReport, auth.qeReportSignature))) {
    fail('QE report', 'signature by the PCK key is invalid');
  }
  const qeReport = parseEnclaveReport(auth.qeReport);
  if (auth.qeAuthData.length !== 32) {
    fail('QE report', 'QE authentication data must be 32 bytes');
  }
  const qeHash = await sha256(concat(auth.attestationKey, auth.qeAuthData));
  if (!equal(qeHash, qeReport.reportData.subarray(0, 32))) {
    fail('QE report', 'REPORT_DATA does not bind the attestation key');
  }

  // 6. QE identity policy
  const qeStatus = await attempt('QE Identity', () => matchQe(qeReport, qeIdentity));

  // 7. Report signature
  const signed = rawQuote.subarray(0, quote.signedLength);
  let attKeyOk = false;
  try {
    attKeyOk = await verifyRawP256(rawP256(auth.attestationKey), signed, auth.ecdsaSignature);
  } catch (e) {
    attKeyOk = false; // not a point on P-256
  }
  if (!attKeyOk) {
    fail('quote', 'report signature by the attestation key is invalid');
  }

  // 8. Platform TCB
  const platformStatus = await attempt('TCB level', () => matchPlatformTcb(tcbInfo, quote, tdx, pck));

  // 9. Final status and attributes
  const final = convergeQeStatus(platformStatus, qeStatus);
  if (final.status === 'Revoked') {
    fail('TCB level', 'the platform TCB is revoked');
  }
  await attempt('attributes', () => checkAttributes(quote));

  return {
    status: final.status,
    advisoryIds: final.advisoryIds,
    platformStatus,
    qeStatus,
    tee: tdx ? 'TDX' : 'SGX',
    quote,
    measurements: measurements(quote),
    fmspc: hex(pck.fmspc),
    ppid: hex(pck.ppid),
    rootSha256: hex(await sha256(rootDer)),
    intelRoot: equal(rootDer, INTEL_ROOT_CA_DER),
    verifiedAt: now
  };
}
