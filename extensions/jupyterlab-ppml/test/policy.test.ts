/**
 * The policy format (shared with Python through tests/data/reference-values/cases.json),
 * the one default policy, the TEE binding and the fail-closed policy state (issue 11
 * items 1, 2, 3, 19).
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';

import { checkPolicy, defaultPolicy, DEFAULT_POLICY, parsePolicy, Policy } from '../src/dcap/policy';
import { PolicyState } from '../src/dcap/policyState';
import { measurements, parseQuote } from '../src/dcap/quote';
import { VerifiedReport } from '../src/dcap/verify';
import { dataDir, readJson, readQuote } from './util';

const repo = path.resolve(dataDir(), '..', '..');
const cases: any[] = readJson('reference-values/cases.json').cases;

for (const c of cases) {
  test(`reference values (shared with Python): ${c.name}`, () => {
    if (c.error !== undefined) {
      assert.throws(() => parsePolicy(c.input), (e: Error) => {
        assert.ok(e.message.includes(c.error), `'${e.message}' does not name ${c.error}`);
        return true;
      });
    } else {
      assert.deepEqual(parsePolicy(c.input), c.policy);
    }
  });
}

test('the settings schema lets every value through to the policy parser (the server would swap invalid ones for {})', () => {
  const schema = JSON.parse(fs.readFileSync(path.join(repo, 'extensions', 'jupyterlab-ppml', 'schema', 'plugin.json'), 'utf8'));
  assert.equal(schema.additionalProperties, undefined);
  assert.deepEqual(Object.keys(schema.properties.policy).sort(), ['default', 'description', 'title']);
});

test('one default policy: the shared JSON file, the settings schema default and policy.ts agree', () => {
  const shared = JSON.parse(fs.readFileSync(path.join(repo, 'ppml_kernel', 'attestation', 'default-policy.json'), 'utf8'));
  const schema = JSON.parse(fs.readFileSync(path.join(repo, 'extensions', 'jupyterlab-ppml', 'schema', 'plugin.json'), 'utf8'));
  assert.deepEqual(defaultPolicy(), shared);
  assert.deepEqual({ ...DEFAULT_POLICY }, shared);
  assert.deepEqual(schema.properties.policy.default, shared);
  assert.deepEqual(parsePolicy({}), shared);
  // As strict as the stricter of the two old defaults.
  assert.deepEqual(shared.allowed_tcb_statuses, ['UpToDate', 'SWHardeningNeeded']);
});

const manifest: any[] = readJson('vectors/MANIFEST.json');
function report(name: string, status = 'UpToDate'): VerifiedReport {
  const v = manifest.find(m => m.quote === name);
  const quote = parseQuote(readQuote(v.quote));
  const m = measurements(quote);
  return { status, advisoryIds: ['INTEL-SA-00615'], tee: m.tee, quote, measurements: m } as unknown as VerifiedReport;
}
const SGX = report('dcap-qvl/sgx_quote');
const TDX = report('dcap-qvl/tdx_quote');
const failed = (r: VerifiedReport, p: Policy): string[] =>
  checkPolicy(r, p)
    .checks.filter(c => !c.ok)
    .map(c => c.field);

test('the default policy refuses ConfigurationNeeded platforms (as the kernel does)', () => {
  assert.deepEqual(failed(SGX, defaultPolicy()), []);
  for (const status of ['ConfigurationNeeded', 'ConfigurationAndSWHardeningNeeded', 'OutOfDate']) {
    assert.deepEqual(failed(report('dcap-qvl/sgx_quote', status), defaultPolicy()), ['TCB status']);
  }
});

test('a policy is bound to its TEE kind: SGX pins never admit a TD, and vice versa', () => {
  const sgxPins = parsePolicy({ tee: 'sgx', mrenclave: [SGX.measurements.mrenclave], mrsigner: SGX.measurements.mrsigner });
  assert.deepEqual(failed(SGX, sgxPins), []);
  assert.ok(failed(TDX, sgxPins).includes('TEE'));
  assert.ok(failed(TDX, parsePolicy({ mrsigner: [SGX.measurements.mrsigner] })).includes('TEE'));
  assert.ok(failed(TDX, parsePolicy({ isv_prod_id: 0 })).includes('TEE'));
  assert.ok(failed(SGX, parsePolicy({ tee: 'tdx' })).includes('TEE'));
  assert.ok(failed(SGX, parsePolicy({ mrtd: [TDX.measurements.mrtd] })).includes('TEE'));
  assert.deepEqual(failed(TDX, parsePolicy({ tee: 'tdx' })), []);
});

test('TDX policies pin MRTD, RTMR0-3, MRCONFIGID and MROWNER', () => {
  const m = TDX.measurements;
  const names = ['mrtd', 'rtmr0', 'rtmr1', 'rtmr2', 'rtmr3', 'mrconfigid', 'mrowner'];
  const exact = Object.fromEntries(names.map(n => [n, [String(m[n])]]));
  assert.deepEqual(failed(TDX, parsePolicy(exact)), []);
  for (const n of names) {
    const other = String(m[n]) === 'f'.repeat(96) ? 'e'.repeat(96) : 'f'.repeat(96);
    assert.deepEqual(failed(TDX, parsePolicy({ ...exact, [n]: [other] })), [n.toUpperCase()], n);
  }
});

test('denied advisories refuse the platform', () => {
  assert.deepEqual(failed(SGX, parsePolicy({ denied_advisories: ['intel-sa-00615'] })), ['advisories']);
  assert.deepEqual(failed(SGX, parsePolicy({ denied_advisories: ['INTEL-SA-00001'] })), []);
});

test('policy state fails closed: an invalid or unloadable setting refuses every enclave, never the default', () => {
  const state = new PolicyState();
  let changes = 0;
  state.onChange(() => changes++);
  assert.deepEqual(state.current(), defaultPolicy()); // no settings registry at all
  const pin = 'aa'.repeat(32);
  const bad: [unknown, string][] = [
    [{ mrenclave: [pin, 'a'.repeat(63)] }, 'mrenclave[1]'],
    [{ mrenclave: ['0x' + pin] }, 'mrenclave[0]'],
    [{ mrenclave: 5 }, 'mrenclave'],
    [{ allowed_statuses: ['UpToDate'] }, 'allowed_statuses'],
    [{ minIsvSvn: 1 }, 'minIsvSvn'],
    [{ allowed_tcb_statuses: ['UpToDate', 'Revoked'] }, 'allowed_tcb_statuses[1]'],
    [[], 'object']
  ];
  for (const [policy, field] of bad) {
    state.fromSettings({ policy: { mrenclave: [pin] } });
    assert.equal(state.current().mrenclave[0], pin);
    state.fromSettings({ policy });
    assert.throws(() => state.current(), (e: Error) => {
      assert.match(e.message, /PPML setting 'policy' is invalid/);
      assert.ok(e.message.includes(field), `${e.message} names ${field}`);
      assert.match(e.message, /every enclave is refused/);
      return true;
    });
    assert.ok(state.problem?.includes(field));
  }
  state.fromSettings({ policy: {}, polcy: { mrenclave: [pin] } });
  assert.throws(() => state.current(), /unknown setting 'polcy'.*every enclave is refused/);
  state.loadFailed([{ instancePath: '/policy', message: 'must be object' }]);
  assert.throws(() => state.current(), /settings could not be loaded .*\/policy must be object.*every enclave is refused/);
  state.loadFailed(new Error('network down'));
  assert.throws(() => state.current(), /network down/);
  state.fromSettings({ policy: {} });
  assert.deepEqual(state.current(), defaultPolicy());
  assert.equal(state.problem, null);
  assert.equal(changes, bad.length * 2 + 4);
});
