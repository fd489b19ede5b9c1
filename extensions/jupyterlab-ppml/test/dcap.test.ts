import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';

import { hex, sha256 } from '../src/dcap';
import { measurements, parseQuote } from '../src/dcap/quote';
import { INTEL_ROOT_CA_DER, INTEL_ROOT_CA_SHA256 } from '../src/dcap/roots';
import { verifyQuote } from '../src/dcap/verify';
import { dataDir, readJson, readQuote, readText } from './util';

const manifest: any[] = readJson('vectors/MANIFEST.json');

test('built-in Intel root matches the pinned fingerprint and the vector file', async () => {
  assert.equal(hex(await sha256(INTEL_ROOT_CA_DER)), INTEL_ROOT_CA_SHA256);
  const file = new Uint8Array(fs.readFileSync(path.join(dataDir(), 'vectors', 'IntelSGXRootCA.der')));
  assert.deepEqual(INTEL_ROOT_CA_DER, file);
});

for (const v of manifest) {
  test(`vector ${v.quote}: ${v.expected}`, async () => {
    const raw = readQuote(v.quote);
    const q = parseQuote(raw);
    assert.equal(q.header.version, v.quote_version);
    const m = measurements(q);
    assert.equal(m.tee, v.tee);
    if (v.tee === 'SGX') {
      assert.equal(m.mrenclave, v.mrenclave);
      assert.equal(m.mrsigner, v.mrsigner);
      assert.equal(m.isvprodid, v.isv_prod_id);
      assert.equal(m.isvsvn, v.isv_svn);
    } else {
      assert.equal(m.mrtd, v.mrtd);
      assert.equal(m.td_attributes, v.td_attributes);
    }
    if (v.expected === 'parse-only') {
      return;
    }
    const collateral = readText(path.join('vectors', v.collateral));
    const run = verifyQuote(raw, collateral, { now: v.verify_at });
    if (String(v.expected).startsWith('ERROR')) {
      await assert.rejects(run);
    } else {
      const report = await run;
      assert.equal(report.status, v.expected);
      assert.equal(report.intelRoot, true);
      assert.equal(report.fmspc.toUpperCase(), v.fmspc);
    }
  });
}

test('real vectors fail at "now" (their collateral has expired)', async () => {
  const v = manifest.find(x => x.expected === 'UpToDate');
  const raw = readQuote(v.quote);
  const collateral = readText(path.join('vectors', v.collateral));
  await assert.rejects(verifyQuote(raw, collateral, { now: Date.now() / 1000 }));
});
