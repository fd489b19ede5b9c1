/**
 * Intel DCAP quote parsing: SGX v3, TDX v4 and v5 (TD 1.0 and 1.5 bodies), decoded
 * field by field exactly as dcap-qvl decodes them (little-endian, length-prefixed
 * auth data, trailing bytes ignored).
 */

import { hex, Reader } from './bytes';

export const TEE_SGX = 0x00000000;
export const TEE_TDX = 0x00000081;
export const HEADER_LEN = 48;
export const ENCLAVE_REPORT_LEN = 384;
export const TD10_LEN = 584;
export const TD15_LEN = 648;
const MAX_DATA_LEN = 1_048_576;

export interface Header {
  version: number;
  attestationKeyType: number;
  teeType: number;
  qeSvn: number;
  pceSvn: number;
  qeVendorId: Uint8Array;
  userData: Uint8Array;
}

export interface EnclaveReport {
  kind: 'SGX';
  cpuSvn: Uint8Array;
  miscSelect: number;
  attributes: Uint8Array;
  mrEnclave: Uint8Array;
  mrSigner: Uint8Array;
  isvProdId: number;
  isvSvn: number;
  reportData: Uint8Array;
  raw: Uint8Array;
}

export interface TdReport {
  kind: 'TD10' | 'TD15';
  teeTcbSvn: Uint8Array;
  mrSeam: Uint8Array;
  mrSignerSeam: Uint8Array;
  seamAttributes: Uint8Array;
  tdAttributes: Uint8Array;
  xfam: Uint8Array;
  mrTd: Uint8Array;
  mrConfigId: Uint8Array;
  mrOwner: Uint8Array;
  mrOwnerConfig: Uint8Array;
  rtMr: Uint8Array[];
  reportData: Uint8Array;
  teeTcbSvn2?: Uint8Array;
  mrServiceTd?: Uint8Array;
}

export type Report = EnclaveReport | TdReport;

export interface AuthData {
  ecdsaSignature: Uint8Array;
  attestationKey: Uint8Array;
  qeReport: Uint8Array;
  qeReportSignature: Uint8Array;
  qeAuthData: Uint8Array;
  certType: number;
  certData: Uint8Array;
}

export interface Quote {
  header: Header;
  report: Report;
  authData: AuthData;
  /** Bytes covered by the attestation key's signature. */
  signedLength: number;
}

export function parseEnclaveReport(raw: Uint8Array): EnclaveReport {
  const r = new Reader(raw, 'enclave report');
  const cpuSvn = r.bytes(16, 'CPUSVN');
  const miscSelect = r.u32('MISCSELECT');
  r.bytes(28, 'reserved');
  const attributes = r.bytes(16, 'ATTRIBUTES');
  const mrEnclave = r.bytes(32, 'MRENCLAVE');
  r.bytes(32, 'reserved');
  const mrSigner = r.bytes(32, 'MRSIGNER');
  r.bytes(96, 'reserved');
  const isvProdId = r.u16('ISVPRODID');
  const isvSvn = r.u16('ISVSVN');
  r.bytes(60, 'reserved');
  const reportData = r.bytes(64, 'REPORT_DATA');
  return { kind: 'SGX', cpuSvn, miscSelect, attributes, mrEnclave, mrSigner, isvProdId, isvSvn, reportData, raw };
}

function parseTdReport(r: Reader, v15: boolean): TdReport {
  const rep: TdReport = {
    kind: v15 ? 'TD15' : 'TD10',
    teeTcbSvn: r.bytes(16, 'TEE_TCB_SVN'),
    mrSeam: r.bytes(48, 'MRSEAM'),
    mrSignerSeam: r.bytes(48, 'MRSIGNERSEAM'),
    seamAttributes: r.bytes(8, 'SEAMATTRIBUTES'),
    tdAttributes: r.bytes(8, 'TDATTRIBUTES'),
    xfam: r.bytes(8, 'XFAM'),
    mrTd: r.bytes(48, 'MRTD'),
    mrConfigId: r.bytes(48, 'MRCONFIGID'),
    mrOwner: r.bytes(48, 'MROWNER'),
    mrOwnerConfig: r.bytes(48, 'MROWNERCONFIG'),
    rtMr: [r.bytes(48, 'RTMR0'), r.bytes(48, 'RTMR1'), r.bytes(48, 'RTMR2'), r.bytes(48, 'RTMR3')],
    reportData: r.bytes(64, 'REPORT_DATA')
  };
  if (v15) {
    rep.teeTcbSvn2 = r.bytes(16, 'TEE_TCB_SVN2');
    rep.mrServiceTd = r.bytes(48, 'MRSERVICETD');
  }
  return rep;
}

function lengthPrefixed(r: Reader, size: 2 | 4, field: string): Uint8Array {
  const n = size === 2 ? r.u16(`${field} length`) : r.u32(`${field} length`);
  if (n > MAX_DATA_LEN) {
    throw new Error(`quote: ${field} length ${n} exceeds the maximum`);
  }
  return r.bytes(n, field);
}

export function parseQuote(raw: Uint8Array): Quote {
  const r = new Reader(raw, 'quote');
  const header: Header = {
    version: r.u16('version'),
    attestationKeyType: r.u16('attestation key type'),
    teeType: r.u32('TEE type'),
    qeSvn: r.u16('QE SVN'),
    pceSvn: r.u16('PCE SVN'),
    qeVendorId: r.bytes(16, 'QE vendor id'),
    userData: r.bytes(20, 'user data')
  };
  let report: Report;
  let signedLength: number;
  if (header.version === 3 || header.version === 4) {
    if (header.teeType === TEE_SGX) {
      report = parseEnclaveReport(r.bytes(ENCLAVE_REPORT_LEN, 'enclave report'));
      signedLength = HEADER_LEN + ENCLAVE_REPORT_LEN;
    } else if (header.teeType === TEE_TDX && header.version === 4) {
      report = parseTdReport(r, false);
      signedLength = HEADER_LEN + TD10_LEN;
    } else {
      throw new Error('quote: invalid TEE type');
    }
  } else if (header.version === 5) {
    const bodyType = r.u16('body type');
    const bodySize = r.u32('body size');
    const expected = ({ 1: ENCLAVE_REPORT_LEN, 2: TD10_LEN, 3: TD15_LEN } as Record<number, number>)[bodyType];
    if (expected !== undefined && bodySize !== expected) {
      throw new Error(`quote: invalid body size ${bodySize} for body type ${bodyType}`);
    }
    if (bodyType === 1) {
      report = parseEnclaveReport(r.bytes(ENCLAVE_REPORT_LEN, 'enclave report'));
      signedLength = HEADER_LEN + 6 + ENCLAVE_REPORT_LEN;
    } else if (bodyType === 2 || bodyType === 3) {
      report = parseTdReport(r, bodyType === 3);
      signedLength = HEADER_LEN + 6 + (bodyType === 3 ? TD15_LEN : TD10_LEN);
    } else {
      throw new Error(`quote: unsupported body type ${bodyType}`);
    }
  } else {
    throw new Error(`quote: unsupported version ${header.version}`);
  }
  const auth = new Reader(lengthPrefixed(r, 4, 'auth data'), 'auth data');
  const ecdsaSignature = auth.bytes(64, 'ECDSA signature');
  const attestationKey = auth.bytes(64, 'attestation key');
  let qe: Reader = auth;
  if (header.version !== 3) {
    // v4/v5: certification data (type 6) wraps the QE report and the PCK chain.
    auth.u16('certification data type');
    qe = new Reader(lengthPrefixed(auth, 4, 'certification data'), 'QE report certification data');
  }
  const qeReport = qe.bytes(ENCLAVE_REPORT_LEN, 'QE report');
  const qeReportSignature = qe.bytes(64, 'QE report signature');
  const qeAuthData = lengthPrefixed(qe, 2, 'QE auth data');
  const certType = qe.u16('certification data type');
  const certData = lengthPrefixed(qe, 4, 'certification data');
  return {
    header,
    report,
    signedLength,
    authData: { ecdsaSignature, attestationKey, qeReport, qeReportSignature, qeAuthData, certType, certData }
  };
}

/** Measurements of a quote as hex strings, for display and policy. */
export function measurements(q: Quote): Record<string, string | number> {
  const rep = q.report;
  if (rep.kind === 'SGX') {
    return {
      tee: 'SGX',
      mrenclave: hex(rep.mrEnclave),
      mrsigner: hex(rep.mrSigner),
      isvprodid: rep.isvProdId,
      isvsvn: rep.isvSvn,
      attributes: hex(rep.attributes),
      miscselect: rep.miscSelect,
      cpusvn: hex(rep.cpuSvn),
      report_data: hex(rep.reportData)
    };
  }
  const out: Record<string, string | number> = {
    tee: 'TDX',
    body: rep.kind,
    mrtd: hex(rep.mrTd),
    rtmr0: hex(rep.rtMr[0]),
    rtmr1: hex(rep.rtMr[1]),
    rtmr2: hex(rep.rtMr[2]),
    rtmr3: hex(rep.rtMr[3]),
    mrseam: hex(rep.mrSeam),
    mrsignerseam: hex(rep.mrSignerSeam),
    mrconfigid: hex(rep.mrConfigId),
    mrowner: hex(rep.mrOwner),
    mrownerconfig: hex(rep.mrOwnerConfig),
    td_attributes: hex(rep.tdAttributes),
    xfam: hex(rep.xfam),
    tee_tcb_svn: hex(rep.teeTcbSvn),
    report_data: hex(rep.reportData)
  };
  if (rep.mrServiceTd) {
    out.mrservicetd = hex(rep.mrServiceTd);
  }
  return out;
}
