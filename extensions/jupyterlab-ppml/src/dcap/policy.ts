/**
 * The user's policy: which enclaves this browser accepts after the quote verified.
 *
 * Values come from the extension settings, or are imported from the reference-values
 * JSON that the enclave image build publishes (see docs/protocol.md). Every check is
 * reported with expected and actual side by side, so a mismatch can be shown in red.
 */

import { TCB_STATUSES, TcbStatus } from './collateral';
import { VerifiedReport } from './verify';

export interface Policy {
  /** Accepted MRENCLAVE values (hex); empty = any. */
  mrenclave: string[];
  /** Accepted MRSIGNER values (hex); empty = any. */
  mrsigner: string[];
  /** Required ISVPRODID, or null for any. */
  isvprodid: number | null;
  /** Minimum ISVSVN, or null for any. */
  minIsvsvn: number | null;
  /** Accepted MRTD values for TDX (hex); empty = any. */
  mrtd: string[];
  /** TCB statuses accepted. */
  allowedStatuses: TcbStatus[];
}

export const DEFAULT_ALLOWED_STATUSES: TcbStatus[] = [
  'UpToDate',
  'SWHardeningNeeded',
  'ConfigurationNeeded',
  'ConfigurationAndSWHardeningNeeded'
];

export function defaultPolicy(): Policy {
  return {
    mrenclave: [],
    mrsigner: [],
    isvprodid: null,
    minIsvsvn: null,
    mrtd: [],
    allowedStatuses: [...DEFAULT_ALLOWED_STATUSES]
  };
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

function hexList(v: unknown, field: string): string[] {
  if (v === undefined || v === null) {
    return [];
  }
  const list = Array.isArray(v) ? v : [v];
  return list.map(x => {
    if (typeof x !== 'string' || !/^[0-9a-fA-F]+$/.test(x)) {
      throw new Error(`policy: ${field} must be hex strings`);
    }
    return x.toLowerCase();
  });
}

function optUint(v: unknown, field: string): number | null {
  if (v === undefined || v === null || v === '') {
    return null;
  }
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffff) {
    throw new Error(`policy: ${field} must be an integer in 0..65535`);
  }
  return v;
}

/** Build a policy from settings or a reference-values file (unknown keys are ignored). */
export function parsePolicy(input: Record<string, unknown>): Policy {
  const p = defaultPolicy();
  p.mrenclave = hexList(input.mrenclave, 'mrenclave');
  p.mrsigner = hexList(input.mrsigner, 'mrsigner');
  p.mrtd = hexList(input.mrtd, 'mrtd');
  p.isvprodid = optUint(input.isvprodid, 'isvprodid');
  p.minIsvsvn = optUint(input.minIsvsvn ?? input.min_isvsvn ?? input.isvsvn, 'minIsvsvn');
  const statuses = input.allowedStatuses ?? input.allowed_statuses;
  if (statuses !== undefined) {
    if (!Array.isArray(statuses) || statuses.some(s => !(TCB_STATUSES as readonly unknown[]).includes(s))) {
      throw new Error(`policy: allowedStatuses must be a list of ${TCB_STATUSES.join(', ')}`);
    }
    p.allowedStatuses = statuses as TcbStatus[];
  }
  return p;
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
      expected: policy.allowedStatuses.join(', '),
      actual: report.status,
      ok: policy.allowedStatuses.includes(report.status)
    }
  ];
  if (report.tee === 'SGX') {
    checks.push(oneOf('MRENCLAVE', policy.mrenclave, String(m.mrenclave)));
    checks.push(oneOf('MRSIGNER', policy.mrsigner, String(m.mrsigner)));
    checks.push({
      field: 'ISVPRODID',
      expected: policy.isvprodid === null ? 'any' : String(policy.isvprodid),
      actual: String(m.isvprodid),
      ok: policy.isvprodid === null || policy.isvprodid === m.isvprodid
    });
    checks.push({
      field: 'ISVSVN',
      expected: policy.minIsvsvn === null ? 'any' : `>= ${policy.minIsvsvn}`,
      actual: String(m.isvsvn),
      ok: policy.minIsvsvn === null || Number(m.isvsvn) >= policy.minIsvsvn
    });
  } else {
    checks.push(oneOf('MRTD', policy.mrtd, String(m.mrtd)));
  }
  return { ok: checks.every(c => c.ok), checks };
}
