/**
 * The user's policy: which enclaves this browser accepts after the quote verified.
 *
 * One format for the extension's policy setting, the reference-values file the image
 * build publishes and the kernel's policy files (`ppml-reference-values/1`, rules in
 * docs/protocol.md section 11). This parser and Python's `Policy.from_dict`
 * (ppml_kernel/attestation/policy.py) implement the same rules and are held together by
 * the shared cases in tests/data/reference-values/cases.json. Anything that does not
 * parse is an error naming the key: the caller then refuses every enclave (fail closed).
 */

import { TcbStatus } from './collateral';
import { VerifiedReport } from './verify';

export type TeeKind = 'sgx' | 'tdx';

export interface Policy {
  /** The TEE kind the policy is bound to (named, or implied by its pins); null = either. */
  tee: TeeKind | null;
  /** Accepted MRENCLAVE values (lowercase hex); empty = any. */
  mrenclave: string[];
  /** Accepted MRSIGNER values; empty = any. */
  mrsigner: string[];
  /** Required ISVPRODID, or null for any. */
  isv_prod_id: number | null;
  /** Minimum ISVSVN, or null for any. */
  min_isv_svn: number | null;
  /** TDX allow-lists (48-byte values); empty = any. */
  mrtd: string[];
  rtmr0: string[];
  rtmr1: string[];
  rtmr2: string[];
  rtmr3: string[];
  mrconfigid: string[];
  mrowner: string[];
  /** TCB statuses accepted (never Revoked). */
  allowed_tcb_statuses: TcbStatus[];
  /** Advisory ids (upper case) that refuse a platform. */
  denied_advisories: string[];
  /** For the kernel side; the browser always asks the user before trusting a simulated root. */
  allow_simulated: boolean;
}

export const SCHEMA = 'ppml-reference-values/1';

/**
 * The default policy: a copy of ppml_kernel/attestation/default-policy.json (the one
 * definition, also the settings schema's default); test/policy.test.ts holds them equal.
 */
export const DEFAULT_POLICY: Readonly<Policy> = Object.freeze({
  tee: null,
  mrenclave: [],
  mrsigner: [],
  isv_prod_id: null,
  min_isv_svn: null,
  mrtd: [],
  rtmr0: [],
  rtmr1: [],
  rtmr2: [],
  rtmr3: [],
  mrconfigid: [],
  mrowner: [],
  allowed_tcb_statuses: ['UpToDate', 'SWHardeningNeeded'] as TcbStatus[],
  denied_advisories: [],
  allow_simulated: false
});

/** Statuses a policy may allow (Revoked fails verification itself). */
export const ALLOWABLE_TCB_STATUSES: readonly TcbStatus[] = [
  'UpToDate',
  'SWHardeningNeeded',
  'ConfigurationNeeded',
  'ConfigurationAndSWHardeningNeeded',
  'OutOfDate',
  'OutOfDateConfigurationNeeded'
];

const SGX_HEX: Record<string, number> = { mrenclave: 32, mrsigner: 32 };
const TDX_HEX: Record<string, number> = { mrtd: 48, rtmr0: 48, rtmr1: 48, rtmr2: 48, rtmr3: 48, mrconfigid: 48, mrowner: 48 };
const SGX_INT = ['isv_prod_id', 'min_isv_svn'];
const KEYS = new Set([
  'schema',
  'comment',
  'tee',
  'allowed_tcb_statuses',
  'denied_advisories',
  'allow_simulated',
  ...Object.keys(SGX_HEX),
  ...Object.keys(TDX_HEX),
  ...SGX_INT
]);
const ADVISORY = /^[A-Za-z0-9][A-Za-z0-9-]{0,63}$/;

export class PolicyError extends Error {}

export function defaultPolicy(): Policy {
  return JSON.parse(JSON.stringify(DEFAULT_POLICY));
}

function unique<T>(values: T[]): T[] {
  return [...new Set(values)];
}

function repr(v: unknown): string {
  return JSON.stringify(v) ?? String(v);
}

function hexList(name: string, value: unknown, size: number): string[] {
  const items = typeof value === 'string' ? [value] : value;
  if (!Array.isArray(items)) {
    throw new PolicyError(`${name}: must be a list of hex strings`);
  }
  const pattern = new RegExp(`^[0-9a-fA-F]{${2 * size}}$`);
  return unique(
    items.map((item, i) => {
      if (typeof item !== 'string' || !pattern.test(item)) {
        throw new PolicyError(`${name}[${i}]: must be ${2 * size} hex digits, got ${repr(item)}`);
      }
      return item.toLowerCase();
    })
  );
}

function optionalU16(name: string, value: unknown): number | null {
  if (value === null) {
    return null;
  }
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > 0xffff) {
    throw new PolicyError(`${name}: must be an integer 0..65535 or null, got ${repr(value)}`);
  }
  return value;
}

function statuses(value: unknown): TcbStatus[] {
  if (!Array.isArray(value) || value.length === 0) {
    throw new PolicyError('allowed_tcb_statuses: must be a non-empty list');
  }
  value.forEach((s, i) => {
    if (!(ALLOWABLE_TCB_STATUSES as readonly unknown[]).includes(s)) {
      throw new PolicyError(
        `allowed_tcb_statuses[${i}]: unknown or forbidden status ${repr(s)} (one of ${ALLOWABLE_TCB_STATUSES.join(', ')})`
      );
    }
  });
  return unique(value as TcbStatus[]);
}

function advisories(value: unknown): string[] {
  if (!Array.isArray(value)) {
    throw new PolicyError('denied_advisories: must be a list of advisory ids');
  }
  value.forEach((a, i) => {
    if (typeof a !== 'string' || !ADVISORY.test(a)) {
      throw new PolicyError(`denied_advisories[${i}]: not an advisory id: ${repr(a)}`);
    }
  });
  return unique((value as string[]).map(a => a.toUpperCase()));
}

function impliedTee(tee: unknown, sgx: string[], tdx: string[]): TeeKind | null {
  if (tee !== null && tee !== 'sgx' && tee !== 'tdx') {
    throw new PolicyError(`tee: must be 'sgx', 'tdx' or null, got ${repr(tee)}`);
  }
  if (sgx.length && tdx.length) {
    throw new PolicyError(`tee: pins both SGX (${sgx.join(', ')}) and TDX (${tdx.join(', ')}) fields`);
  }
  if (tee === 'sgx' && tdx.length) {
    throw new PolicyError(`tee: 'sgx' policy pins TDX field(s) ${tdx.join(', ')}`);
  }
  if (tee === 'tdx' && sgx.length) {
    throw new PolicyError(`tee: 'tdx' policy pins SGX field(s) ${sgx.join(', ')}`);
  }
  return tee ?? (sgx.length ? 'sgx' : tdx.length ? 'tdx' : null);
}

/**
 * Parse a policy setting or a reference-values document (the same format). Missing
 * keys take the default policy's values; anything else that is not exactly right
 * throws a PolicyError whose message starts with the offending key.
 */
export function parsePolicy(input: unknown): Policy {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new PolicyError('a policy must be a JSON object');
  }
  const data = input as Record<string, unknown>;
  const unknown = Object.keys(data)
    .filter(k => !KEYS.has(k))
    .sort();
  if (unknown.length) {
    throw new PolicyError(`${unknown[0]}: unknown key (known: ${[...KEYS].sort().join(', ')})`);
  }
  const merged: Record<string, unknown> = { ...defaultPolicy(), ...data };
  if ('schema' in data && data.schema !== SCHEMA) {
    throw new PolicyError(`schema: must be '${SCHEMA}', got ${repr(data.schema)}`);
  }
  if ('comment' in data && typeof data.comment !== 'string') {
    throw new PolicyError('comment: must be a string');
  }
  if (typeof merged.allow_simulated !== 'boolean') {
    throw new PolicyError('allow_simulated: must be true or false');
  }
  const p = defaultPolicy() as unknown as Record<string, unknown>;
  for (const [k, size] of Object.entries({ ...SGX_HEX, ...TDX_HEX })) {
    p[k] = hexList(k, merged[k], size);
  }
  for (const k of SGX_INT) {
    p[k] = optionalU16(k, merged[k]);
  }
  p.allowed_tcb_statuses = statuses(merged.allowed_tcb_statuses);
  p.denied_advisories = advisories(merged.denied_advisories);
  p.allow_simulated = merged.allow_simulated;
  const sgx = [...Object.keys(SGX_HEX), ...SGX_INT].filter(k => (Array.isArray(p[k]) ? (p[k] as unknown[]).length > 0 : p[k] !== null));
  const tdx = Object.keys(TDX_HEX).filter(k => (p[k] as unknown[]).length > 0);
  p.tee = impliedTee(merged.tee, sgx, tdx);
  return p as unknown as Policy;
}

export interface PolicyCheck {
  field: string;
  expected: string;
  actual: string;
  ok: boolean;
}

export interface PolicyResult {
  ok: boolean;
  checks: PolicyCheck[];
}

function oneOf(field: string, allowed: string[], actual: string): PolicyCheck {
  return {
    field,
    expected: allowed.length ? allowed.join(' or ') : 'any',
    actual,
    ok: allowed.length === 0 || allowed.includes(actual.toLowerCase())
  };
}

/** Check a verified report against the policy. */
export function checkPolicy(report: VerifiedReport, policy: Policy): PolicyResult {
  const m = report.measurements;
  const checks: PolicyCheck[] = [
    {
      field: 'TCB status',
      expected: policy.allowed_tcb_statuses.join(', '),
      actual: report.status,
      ok: policy.allowed_tcb_statuses.includes(report.status)
    }
  ];
  if (policy.denied_advisories.length) {
    const denied = report.advisoryIds.filter(a => policy.denied_advisories.includes(a.toUpperCase()));
    checks.push({
      field: 'advisories',
      expected: `none of ${policy.denied_advisories.join(', ')}`,
      actual: denied.length ? denied.join(', ') : 'none denied',
      ok: denied.length === 0
    });
  }
  if (policy.tee !== null) {
    checks.push({
      field: 'TEE',
      expected: policy.tee.toUpperCase(),
      actual: report.tee,
      ok: report.tee === policy.tee.toUpperCase()
    });
  }
  if (report.tee === 'SGX') {
    checks.push(oneOf('MRENCLAVE', policy.mrenclave, String(m.mrenclave)));
    checks.push(oneOf('MRSIGNER', policy.mrsigner, String(m.mrsigner)));
    checks.push({
      field: 'ISVPRODID',
      expected: policy.isv_prod_id === null ? 'any' : String(policy.isv_prod_id),
      actual: String(m.isvprodid),
      ok: policy.isv_prod_id === null || policy.isv_prod_id === m.isvprodid
    });
    checks.push({
      field: 'ISVSVN',
      expected: policy.min_isv_svn === null ? 'any' : `>= ${policy.min_isv_svn}`,
      actual: String(m.isvsvn),
      ok: policy.min_isv_svn === null || Number(m.isvsvn) >= policy.min_isv_svn
    });
  } else {
    for (const k of Object.keys(TDX_HEX) as (keyof Policy)[]) {
      checks.push(oneOf(k.toUpperCase(), policy[k] as string[], String(m[k])));
    }
  }
  return { ok: checks.every(c => c.ok), checks };
}
