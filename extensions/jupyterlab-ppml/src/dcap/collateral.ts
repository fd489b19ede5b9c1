/**
 * Collateral (dcap-qvl's QuoteCollateralV3 JSON) and the signed documents inside it:
 * TCB Info (v2/v3) and QE Identity (v2/v3). Parsed at least as strictly as serde parses
 * them in dcap-qvl: strict JSON (duplicate keys, floats for integers and non-RFC 8259
 * syntax are errors, see json.ts), required fields present with the right types and
 * ranges; unknown fields are ignored. Dates follow chrono's RFC 3339 rules plus
 * dcap-qvl's conversion to unsigned Unix seconds. The signed JSON strings are kept
 * verbatim (signatures cover their bytes).
 */

import { fromHex } from './bytes';
import { JsonError, parseStrictJson } from './json';

export interface Collateral {
  pckCrlIssuerChain: string;
  rootCaCrl: Uint8Array;
  pckCrl: Uint8Array;
  tcbInfoIssuerChain: string;
  tcbInfo: string;
  tcbInfoSignature: Uint8Array;
  qeIdentityIssuerChain: string;
  qeIdentity: string;
  qeIdentitySignature: Uint8Array;
  pckCertificateChain?: string;
}

export const TCB_STATUSES = [
  'UpToDate',
  'SWHardeningNeeded',
  'ConfigurationNeeded',
  'ConfigurationAndSWHardeningNeeded',
  'OutOfDate',
  'OutOfDateConfigurationNeeded',
  'Revoked'
] as const;
export type TcbStatus = (typeof TCB_STATUSES)[number];

/** Severity used to merge platform and QE status (worse wins), as in dcap-qvl. */
export function severity(status: TcbStatus): number {
  return TCB_STATUSES.indexOf(status);
}

export interface TcbLevel {
  sgxComponents: number[];
  tdxComponents: number[];
  pceSvn: number;
  tcbDate: string;
  status: TcbStatus;
  advisoryIds: string[];
}

/** A TCB level keyed by one ISVSVN (TDX module identities, QE Identity). */
export interface IsvTcbLevel {
  isvsvn: number;
  tcbDate: string;
  status: TcbStatus;
  advisoryIds: string[];
}

export interface TdxModuleIdentity {
  id: string;
  mrsigner: string;
  attributes: string;
  attributesMask: string;
  tcbLevels: IsvTcbLevel[];
}

export interface TcbInfo {
  id: string;
  version: number;
  issueDate: string;
  nextUpdate: string;
  fmspc: string;
  tcbLevels: TcbLevel[];
  tdxModule?: { mrsigner: string; attributes: string; attributesMask: string };
  tdxModuleIdentities: TdxModuleIdentity[];
}

export interface QeIdentity {
  id: string;
  version: number;
  issueDate: string;
  nextUpdate: string;
  miscselect: Uint8Array;
  miscselectMask: Uint8Array;
  attributes: Uint8Array;
  attributesMask: Uint8Array;
  mrsigner: Uint8Array;
  isvprodid: number;
  tcbLevels: IsvTcbLevel[];
}

export class CollateralError extends Error {}

type Json = Record<string, unknown>;

function obj(v: unknown, what: string): Json {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    throw new CollateralError(`${what} must be an object`);
  }
  return v as Json;
}

function str(o: Json, key: string, what: string): string {
  const v = o[key];
  if (typeof v !== 'string') {
    throw new CollateralError(`${what}: missing or non-string field '${key}'`);
  }
  return v;
}

function uint(o: Json, key: string, what: string, max: number): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) {
    throw new CollateralError(`${what}: field '${key}' must be an integer in 0..${max}`);
  }
  return v;
}

function arr(o: Json, key: string, what: string, optional = false): unknown[] {
  const v = o[key];
  if (v === undefined && optional) {
    return [];
  }
  if (!Array.isArray(v)) {
    throw new CollateralError(`${what}: field '${key}' must be an array`);
  }
  return v;
}

function status(o: Json, what: string): TcbStatus {
  const s = str(o, 'tcbStatus', what);
  if (!(TCB_STATUSES as readonly string[]).includes(s)) {
    throw new CollateralError(`${what}: unknown tcbStatus '${s}'`);
  }
  return s as TcbStatus;
}

function advisories(o: Json, what: string): string[] {
  return arr(o, 'advisoryIDs', what, true).map(a => {
    if (typeof a !== 'string') {
      throw new CollateralError(`${what}: advisoryIDs must be strings`);
    }
    return a;
  });
}

function hexField(o: Json, key: string, what: string, size: number): Uint8Array {
  const v = fromHex(str(o, key, what), `${what}.${key}`);
  if (v.length !== size) {
    throw new CollateralError(`${what}: field '${key}' must be ${size} bytes`);
  }
  return v;
}

function parseJson(text: string, what: string): Json {
  let value: unknown;
  try {
    value = parseStrictJson(text);
  } catch (e) {
    if (e instanceof JsonError) {
      throw new CollateralError(`${what} is not valid JSON (${e.message})`);
    }
    throw e;
  }
  return obj(value, what);
}

/** Parse dcap-qvl's collateral JSON (hex for binary fields). */
export function parseCollateral(input: string | Json): Collateral {
  const o = typeof input === 'string' ? parseJson(input, 'collateral') : obj(input, 'collateral');
  const bin = (key: string): Uint8Array => fromHex(str(o, key, 'collateral'), `collateral.${key}`);
  const chain = o.pck_certificate_chain;
  if (chain !== undefined && chain !== null && typeof chain !== 'string') {
    throw new CollateralError("collateral: 'pck_certificate_chain' must be a string");
  }
  return {
    pckCrlIssuerChain: str(o, 'pck_crl_issuer_chain', 'collateral'),
    rootCaCrl: bin('root_ca_crl'),
    pckCrl: bin('pck_crl'),
    tcbInfoIssuerChain: str(o, 'tcb_info_issuer_chain', 'collateral'),
    tcbInfo: str(o, 'tcb_info', 'collateral'),
    tcbInfoSignature: bin('tcb_info_signature'),
    qeIdentityIssuerChain: str(o, 'qe_identity_issuer_chain', 'collateral'),
    qeIdentity: str(o, 'qe_identity', 'collateral'),
    qeIdentitySignature: bin('qe_identity_signature'),
    pckCertificateChain: typeof chain === 'string' ? chain : undefined
  };
}

/** `{tcb: {isvsvn}, tcbDate, tcbStatus, advisoryIDs}`; `what` prefixes error messages. */
function isvTcbLevel(l: unknown, what: string, maxSvn: number): IsvTcbLevel {
  const level = obj(l, `${what} tcbLevel`);
  return {
    isvsvn: uint(obj(level.tcb, `${what} tcb`), 'isvsvn', `${what} tcb`, maxSvn),
    tcbDate: str(level, 'tcbDate', `${what} tcbLevel`),
    status: status(level, `${what} tcbLevel`),
    advisoryIds: advisories(level, `${what} tcbLevel`)
  };
}

function components(v: unknown[], what: string): number[] {
  return v.map(c => uint(obj(c, what), 'svn', what, 255));
}

export function parseTcbInfo(text: string): TcbInfo {
  const w = 'TCB Info';
  const o = parseJson(text, w);
  const info: TcbInfo = {
    id: str(o, 'id', w),
    version: uint(o, 'version', w, 255),
    issueDate: str(o, 'issueDate', w),
    nextUpdate: str(o, 'nextUpdate', w),
    fmspc: str(o, 'fmspc', w),
    tcbLevels: [],
    tdxModuleIdentities: []
  };
  str(o, 'pceId', w);
  uint(o, 'tcbType', w, 0xffffffff);
  uint(o, 'tcbEvaluationDataNumber', w, 0xffffffff);
  info.tcbLevels = arr(o, 'tcbLevels', w).map(l => {
    const level = obj(l, 'tcbLevel');
    const tcb = obj(level.tcb, 'tcbLevel.tcb');
    return {
      sgxComponents: components(arr(tcb, 'sgxtcbcomponents', 'tcb'), 'sgxtcbcomponent'),
      tdxComponents: components(arr(tcb, 'tdxtcbcomponents', 'tcb', true), 'tdxtcbcomponent'),
      pceSvn: uint(tcb, 'pcesvn', 'tcb', 0xffff),
      tcbDate: str(level, 'tcbDate', 'tcbLevel'),
      status: status(level, 'tcbLevel'),
      advisoryIds: advisories(level, 'tcbLevel')
    };
  });
  if (o.tdxModule !== undefined && o.tdxModule !== null) {
    const m = obj(o.tdxModule, 'tdxModule');
    info.tdxModule = {
      mrsigner: str(m, 'mrsigner', 'tdxModule'),
      attributes: str(m, 'attributes', 'tdxModule'),
      attributesMask: str(m, 'attributesMask', 'tdxModule')
    };
  }
  info.tdxModuleIdentities = arr(o, 'tdxModuleIdentities', w, true).map(i => {
    const id = obj(i, 'tdxModuleIdentity');
    return {
      id: str(id, 'id', 'tdxModuleIdentity'),
      mrsigner: str(id, 'mrsigner', 'tdxModuleIdentity'),
      attributes: str(id, 'attributes', 'tdxModuleIdentity'),
      attributesMask: str(id, 'attributesMask', 'tdxModuleIdentity'),
      tcbLevels: arr(id, 'tcbLevels', 'tdxModuleIdentity').map(l => isvTcbLevel(l, 'tdxModule', 255))
    };
  });
  return info;
}

export function parseQeIdentity(text: string): QeIdentity {
  const w = 'QE Identity';
  const o = parseJson(text, w);
  uint(o, 'tcbEvaluationDataNumber', w, 0xffffffff);
  return {
    id: str(o, 'id', w),
    version: uint(o, 'version', w, 255),
    issueDate: str(o, 'issueDate', w),
    nextUpdate: str(o, 'nextUpdate', w),
    miscselect: hexField(o, 'miscselect', w, 4),
    miscselectMask: hexField(o, 'miscselectMask', w, 4),
    attributes: hexField(o, 'attributes', w, 16),
    attributesMask: hexField(o, 'attributesMask', w, 16),
    mrsigner: hexField(o, 'mrsigner', w, 32),
    isvprodid: uint(o, 'isvprodid', w, 0xffff),
    tcbLevels: arr(o, 'tcbLevels', w).map(l => isvTcbLevel(l, 'QE', 0xffff))
  };
}

/** Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm). */
function daysFromCivil(y: number, m: number, d: number): number {
  const yy = m <= 2 ? y - 1 : y;
  const era = Math.floor(yy / 400);
  const yoe = yy - era * 400;
  const doy = Math.floor((153 * (m + (m > 2 ? -3 : 9)) + 2) / 5) + d - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  return era * 146097 + doe - 719468;
}

function daysInMonth(y: number, m: number): number {
  const leap = (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0;
  return [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][m - 1];
}

/**
 * RFC 3339 date-time -> Unix seconds (fraction dropped), or throw. The rules are
 * chrono's `parse_from_rfc3339` (as dcap-qvl uses it): `T`, `t` or a space between date
 * and time, `Z`/`z` or an offset of at most 23:59, a valid calendar date, second 60 read
 * as a leap second (the timestamp of second 59); then, as dcap-qvl converts to unsigned
 * seconds, nothing before 1970-01-01T00:00:00Z.
 */
export function rfc3339(text: string, what: string): number {
  const m = /^([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$/.exec(text);
  if (!m) {
    throw new CollateralError(`${what} is not an RFC 3339 date-time`);
  }
  const [y, mo, d, h, mi, s] = m.slice(1, 7).map(Number);
  if (mo < 1 || mo > 12 || d < 1 || d > daysInMonth(y, mo) || h > 23 || mi > 59 || s > 60) {
    throw new CollateralError(`${what} is not a valid date-time`);
  }
  let offset = 0;
  if (m[8] !== 'Z' && m[8] !== 'z') {
    const oh = Number(m[8].slice(1, 3));
    const om = Number(m[8].slice(4, 6));
    if (oh > 23 || om > 59) {
      throw new CollateralError(`${what} has an invalid UTC offset`);
    }
    offset = (m[8][0] === '-' ? -1 : 1) * (oh * 3600 + om * 60);
  }
  const seconds = daysFromCivil(y, mo, d) * 86400 + h * 3600 + mi * 60 + Math.min(s, 59) - offset;
  if (seconds < 0) {
    throw new CollateralError(`${what} is before 1970`);
  }
  return seconds;
}
