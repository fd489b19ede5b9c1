/**
 * Notebooks at rest (docs/protocol.md 7): outputs sealed under the browser's key, opened
 * only by that key, bound to their cell; sources sealed on request.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { openNotebook, SEALED_MIME, sealNotebook, SOURCE_KEY } from '../src/atrest';

async function key(keyId = '0123456789abcdef') {
  return { key: await crypto.subtle.generateKey({ name: 'AES-GCM', length: 256 }, false, ['encrypt', 'decrypt']), keyId };
}

const nb = () => ({
  cells: [
    { cell_type: 'code', id: 'a', source: 'print(secret_value)', metadata: {}, outputs: [{ output_type: 'stream', name: 'stdout', text: 'derived 42\n' }], execution_count: 1 },
    { cell_type: 'code', id: 'b', source: 'x', metadata: {}, outputs: [], execution_count: null },
    { cell_type: 'markdown', id: 'c', source: '# title', metadata: {} }
  ],
  metadata: {},
  nbformat: 4,
  nbformat_minor: 5
});

test('outputs are sealed, the same key restores them, another key sees the placeholder', async () => {
  const k = await key();
  const sealed = await sealNotebook(nb(), k, false);
  const text = JSON.stringify(sealed);
  assert.equal(text.includes('derived 42'), false);
  assert.ok(text.includes('print(secret_value)'), 'sources stay while sealCellSources is off');
  assert.equal(sealed.cells[0].outputs!.length, 1);
  assert.match(sealed.cells[0].outputs![0].data['text/plain'], /^\[sealed output/);
  assert.equal(sealed.cells[0].outputs![0].data[SEALED_MIME].key_id, k.keyId);
  assert.deepEqual(sealed.cells[1].outputs, []);
  const opened = await openNotebook(sealed, k);
  assert.deepEqual(opened, nb());
  const other = await openNotebook(sealed, await key('fedcba9876543210'));
  assert.deepEqual(other.cells[0].outputs, sealed.cells[0].outputs);
  const none = await openNotebook(sealed, null);
  assert.deepEqual(none.cells[0].outputs, sealed.cells[0].outputs);
  // Sealing again does not double-seal the placeholder (a notebook opened elsewhere).
  assert.deepEqual((await sealNotebook(other, k, false)).cells[0].outputs, sealed.cells[0].outputs);
});

test('sealed outputs moved to another cell or changed do not open', async () => {
  const k = await key();
  const sealed = await sealNotebook(nb(), k, false);
  const moved = JSON.parse(JSON.stringify(sealed));
  moved.cells[1].outputs = moved.cells[0].outputs;
  moved.cells[0].outputs = [];
  const problems: string[] = [];
  const opened = await openNotebook(moved, k, problems);
  assert.match(opened.cells[1].outputs![0].data['text/plain'], /sealed output/);
  assert.equal(problems.length, 1);
  const changed = JSON.parse(JSON.stringify(sealed));
  const s = changed.cells[0].outputs[0].data[SEALED_MIME];
  s.ct = s.ct.replace(/^./, s.ct[0] === 'A' ? 'B' : 'A');
  const p2: string[] = [];
  await openNotebook(changed, k, p2);
  assert.equal(p2.length, 1);
});

test('sealCellSources: the code leaves the file and comes back in the same browser', async () => {
  const k = await key();
  const sealed = await sealNotebook(nb(), k, true);
  const text = JSON.stringify(sealed);
  assert.equal(text.includes('secret_value'), false);
  assert.match(String(sealed.cells[0].source), /^# \[sealed source/);
  assert.ok(sealed.cells[0].metadata![SOURCE_KEY]);
  assert.equal(sealed.cells[2].source, '# title', 'markdown stays');
  assert.deepEqual(await openNotebook(sealed, k), nb());
});

test('the sealCellSources setting is known to the fail-closed settings check (and typed)', async () => {
  const { PolicyState } = await import('../src/dcap/policyState');
  const ok = new PolicyState();
  ok.fromSettings({ policy: {}, sealCellSources: true });
  assert.ok(ok.current());
  const bad = new PolicyState();
  bad.fromSettings({ policy: {}, sealCellSources: 'yes' });
  assert.throws(() => bad.current(), /sealCellSources' must be a boolean/);
  const unknown = new PolicyState();
  unknown.fromSettings({ policy: {}, sealCellSource: true });
  assert.throws(() => unknown.current(), /unknown setting 'sealCellSource'/);
});

test('a notebook sealed by the Python side (ppml-kernel run --outputs sealed) opens here with the same key', async () => {
  const { readJson } = await import('./util');
  const { fromHex } = await import('../src/dcap/bytes');
  const v = readJson('sealed-notebook.json');
  const k = { key: await crypto.subtle.importKey('raw', fromHex(v.key), 'AES-GCM', false, ['encrypt', 'decrypt']), keyId: v.key_id };
  const normalize = (nb: any) => ({ ...nb, cells: nb.cells.map((c: any) => ({ ...c, source: Array.isArray(c.source) ? c.source.join('') : c.source })) });
  assert.deepEqual(normalize(await openNotebook(v.sealed, k)), normalize(v.original));
  // And the browser's own sealing of it opens with the same code path (same format).
  assert.deepEqual(normalize(await openNotebook(await sealNotebook(v.original, k, true), k)), normalize(v.original));
});
