/**
 * End to end in a real browser: Debian's chromium driven by playwright-core against a
 * real `jupyter lab` on 127.0.0.1, with the built extension and the real PPML kernel
 * (`python -m ppml_kernel`) on the simulated enclave, each kernelspec with its own
 * simulated PKI.
 *
 * Checks: the simulated-enclave approval (remembered per simulated root), the badge
 * (sealed / not sealed), `%ppml secret` answered in the dialog and used by the kernel,
 * every websocket frame and HTTP body crossing the Jupyter server (plus the server log
 * and the saved notebooks) free of the secret's bytes, re-attestation after a restart,
 * a policy mismatch shown in red with nothing sent, the browser's verification time;
 * the sealed-session wire capture (code, a secret-derived value, a DataFrame, a
 * matplotlib plot, an ipywidgets slider, an input() answer and a traceback: none of it
 * on the wire, outputs encrypted in the saved .ipynb, restored in the same profile,
 * placeholders in a fresh one); a second browser profile on an owned kernel (the
 * relay as a second browser) refused visibly with nothing sent; and the sealed vs
 * unsealed cell round trip. Screenshots go to test-artifacts/e2e/ at the repository root.
 *
 * The extension loaded is the one built in THIS checkout (<repo>/ppml_kernel/labextension,
 * linked into a private JUPYTER_PATH) and the kernels import THIS checkout's ppml_kernel
 * (PYTHONPATH=<repo> in their kernelspecs).
 *
 * Needs: the extension built (jlpm build:prod), chromium at /usr/bin/chromium (or
 * $CHROMIUM), a Python with jupyterlab + this repository's deps ($PPML_PYTHON, default
 * <repo>/.venv/bin/python). Run: jlpm test:e2e
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, test } from 'node:test';

import { artifactsDir, badge, launchChromium, notebook, runCell, startLab, stopLab, writeJson } from './lab.mjs';

const ARTIFACTS = artifactsDir('e2e');
const GOOD_MRENCLAVE = 'aa'.repeat(32);
const BAD_MRENCLAVE = 'bb'.repeat(32);
// The secret: its bytes must never cross the Jupyter server in any encoding we can spot.
const SECRET = `pw-${randomBytes(12).toString('hex')}-Ünïcode`;
const SECRET_SHA = createHash('sha256').update(SECRET, 'utf8').digest('hex').slice(0, 16);

// The wire-capture notebook. Every value checked below is computed in the kernel, so the
// typed code does not contain it; only CODE_MARK is typed (it must be in no frame).
const R = randomBytes(6).toString('hex');
const sha = text => createHash('sha256').update(text, 'utf8').digest('hex');
const WIRE_SECRET = `wk-${randomBytes(10).toString('hex')}`;
const CODE_MARK = `CODE_MARK_${R}`;
const DERIVED = sha(`wire:${WIRE_SECRET}`).slice(0, 24);
const DF_VALUES = [0, 1, 2].map(i => sha(`df-${R}-${i}`).slice(0, 18));
const TB_VALUE = `tb-${sha(`tb-${R}`).slice(0, 20)}`;
const ANSWER = `ans-${randomBytes(8).toString('hex')}`;
const ANSWER_REVERSED = [...ANSWER].reverse().join('');
const WIRE_CELLS = [
  '%ppml secret wire_key --prompt "Key for the wire-capture test"',
  `import hashlib, ppml_kernel.secrets as s\n${CODE_MARK} = hashlib.sha256(("wire:" + s.get("wire_key")).encode()).hexdigest()[:24]\nprint("derived", ${CODE_MARK})`,
  `import hashlib, pandas as pd\npd.DataFrame({"token": [hashlib.sha256(f"df-${R}-{i}".encode()).hexdigest()[:18] for i in range(3)], "n": [1, 2, 3]})`,
  'import matplotlib.pyplot as plt\nplt.plot([0, 1, 2], [3, 1, 2])\nplt.title("wire capture")\nplt.show()',
  'import ipywidgets as w\nw.IntSlider(value=37, description="slider")',
  'ans = input("your answer? ")\nprint("reversed:", ans[::-1])',
  `import hashlib\nraise ValueError("tb-" + hashlib.sha256(b"tb-${R}").hexdigest()[:20])`
];

const ctx = {};

async function shot(page, name) {
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`) });
}

function encodings(secret) {
  const buf = Buffer.from(secret, 'utf8');
  return [
    buf,
    Buffer.from(buf.toString('base64')),
    Buffer.from(buf.toString('hex')),
    Buffer.from(JSON.stringify(secret).slice(1, -1)) // as it would appear escaped in JSON
  ];
}

function containsSecret(data) {
  const buf = Buffer.isBuffer(data) ? data : Buffer.from(String(data ?? ''), 'utf8');
  return encodings(SECRET).some(e => buf.includes(e));
}

before(async () => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  for (const f of fs.readdirSync(ARTIFACTS)) {
    if (f.startsWith('FAILED-') || f === 'browser-console.log') {
      fs.rmSync(path.join(ARTIFACTS, f), { force: true });
    }
  }
  const lab = await startLab({
    prefix: 'ppml-e2e-',
    kernels: {
      'ppml-demo': { display: 'PPML demo (simulated enclave)', env: { PPML_SIM_MRENCLAVE: GOOD_MRENCLAVE } },
      'ppml-mismatch': { display: 'PPML other enclave (simulated enclave)', env: { PPML_SIM_MRENCLAVE: BAD_MRENCLAVE } }
    },
    settings: { policy: { mrenclave: [GOOD_MRENCLAVE], allowed_tcb_statuses: ['UpToDate', 'SWHardeningNeeded'] } },
    notebooks: {
      'demo.ipynb': notebook('ppml-demo', [
        '%ppml secret db_password --prompt "Password for the demo database"',
        'import hashlib, ppml_kernel.secrets as s\nprint("computed:", hashlib.sha256(s.get("db_password").encode()).hexdigest()[:16])',
        '%ppml secrets'
      ]),
      'mismatch.ipynb': notebook('ppml-mismatch', ['%ppml secret db_password']),
      'plain.ipynb': notebook('python3', ['1 + 1']),
      'wire.ipynb': notebook('ppml-demo', WIRE_CELLS),
      'bench.ipynb': notebook('ppml-demo', ['x = 1'])
    },
    // window.jupyterapp, only for the round-trip measurement
    extraArgs: ['--ServerApp.log_level=DEBUG', '--LabApp.expose_app_in_browser=True']
  });
  const { tmp, port, token, server, log, work, settings } = lab;
  Object.assign(ctx, { lab, tmp, port, token, server, log, work, settings, frames: [], http: [] });
  ctx.browser = await launchChromium();
  // One browser profile (context) for the owner: pages in it share the owner key (IndexedDB)
  // and the remembered simulated roots (localStorage).
  ctx.context = await ctx.browser.newContext({ viewport: { width: 1400, height: 900 } });
  const page = await ctx.context.newPage();
  record(page, 'owner');
  ctx.page = page;
});

after(async () => {
  await stopLab(ctx.lab, ctx.browser);
});

/**
 * Record every WebSocket frame and HTTP body of a page: all of it crosses the Jupyter
 * server (the relay), so this is what the server sees.
 */
function record(page, who) {
  page.on('console', m => fs.appendFileSync(path.join(ARTIFACTS, 'browser-console.log'), `[${who}] ${m.type()}: ${m.text()}\n`));
  page.on('websocket', ws => {
    ws.on('framesent', f => ctx.frames.push({ who, dir: 'sent', url: ws.url(), payload: f.payload }));
    ws.on('framereceived', f => ctx.frames.push({ who, dir: 'received', url: ws.url(), payload: f.payload }));
  });
  page.on('request', r => {
    let body = '';
    try {
      body = r.postDataBuffer() ?? '';
    } catch (e) {
      body = r.postData() ?? '';
    }
    ctx.http.push({ who, url: r.url(), body });
  });
  page.on('response', async r => {
    try {
      ctx.http.push({ who, url: r.url(), body: await r.body() });
    } catch (e) {
      // redirects and aborted requests have no body
    }
  });
}

/** Run a test step; on failure save a screenshot named after it. */
function step(name, fn) {
  return async () => {
    try {
      await fn();
    } catch (e) {
      await ctx.page?.screenshot({ path: path.join(ARTIFACTS, `FAILED-${name}.png`) }).catch(() => undefined);
      throw e;
    }
  };
}

async function palette(page, label) {
  await page.keyboard.press('Control+Shift+C');
  const input = page.locator('.lm-CommandPalette-input');
  await input.fill(label);
  await page.locator('.lm-CommandPalette-item.lm-mod-active').waitFor();
  await page.keyboard.press('Enter');
}

test('the browser verifies the enclave, asks before trusting a simulated root, and sends the secret', { timeout: 300_000 }, step('verify-and-secret', async () => {
  const { page, port, token } = ctx;
  await page.goto(`http://127.0.0.1:${port}/lab/tree/demo.ipynb?token=${token}`);
  await page.getByText('Allow a SIMULATED enclave?').waitFor({ timeout: 120_000 });
  await shot(page, '01-allow-simulated-dialog');
  await page.getByRole('button', { name: 'Allow SIMULATED enclave' }).click();
  await badge(page).and(page.locator('[data-ppml-phase="simulated"]')).waitFor({ timeout: 60_000 });
  assert.match(await badge(page).innerText(), /SIMULATED SGX/);
  await page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').first().waitFor({ timeout: 60_000 }).catch(() => undefined);
  await shot(page, '02-simulated-badge');

  const first = await runCell(page, 0);
  const dialog = page.locator('.ppml-secret-dialog');
  await dialog.waitFor({ timeout: 60_000 });
  assert.match(await dialog.innerText(), /Password for the demo database/);
  assert.match(await dialog.innerText(), /SIMULATED enclave: NOT CONFIDENTIAL/);
  await shot(page, '03-secret-dialog');
  await dialog.locator('.ppml-secret-input').fill(SECRET);
  await dialog.getByRole('button', { name: 'Send encrypted' }).click();
  await first.locator('.jp-OutputArea-output').getByText("Secret 'db_password' arrived end-to-end encrypted").waitFor({ timeout: 60_000 });
  const second = await runCell(page, 1);
  await second.locator('.jp-OutputArea-output').getByText(`computed: ${SECRET_SHA}`).waitFor({ timeout: 60_000 });
  const third = await runCell(page, 2);
  await third.locator('.jp-OutputArea-output').getByText('db_password').first().waitFor({ timeout: 60_000 });
  // Holding a secret switched the kernel to sealed mode; the badge follows (`mode` message).
  await page.waitForFunction(() => /· sealed$/.test(document.querySelector('#jp-main-statusbar .ppml-status')?.textContent ?? ''), null, { timeout: 30_000 });
  await shot(page, '04-kernel-used-the-secret');

  await badge(page).click();
  const report = page.locator('.ppml-report');
  await report.getByText('Verification time in this browser').waitFor();
  await report.getByText("This browser's owner key").waitFor();
  assert.match(await report.locator('tr', { hasText: "This browser's owner key" }).locator('td').innerText(), /^[0-9a-f]{4} [0-9a-f]{4} [0-9a-f]{4} [0-9a-f]{4}$/);
  assert.match(await report.locator('tr', { hasText: 'Kernel owners' }).locator('td').innerText(), /claimed by this tab|[0-9a-f]{4} /);
  await shot(page, '05-report');
}));

test('browser verification time (re-verifying 10 times)', { timeout: 300_000 }, step('timing', async () => {
  const { page } = ctx;
  const times = [];
  for (let i = 0; i < 10; i++) {
    await palette(page, "PPML: Verify the kernel's enclave again");
    await badge(page).and(page.locator('[data-ppml-phase="verifying"]')).waitFor({ timeout: 30_000 }).catch(() => undefined);
    await badge(page).and(page.locator('[data-ppml-phase="simulated"]')).waitFor({ timeout: 60_000 });
    const row = page.locator('.ppml-report tr', { hasText: 'Verification time in this browser' });
    times.push(parseFloat((await row.locator('td').innerText()).replace(' ms', '')));
  }
  times.sort((a, b) => a - b);
  const median = (times[4] + times[5]) / 2;
  fs.writeFileSync(path.join(ARTIFACTS, 'verify-times.json'), JSON.stringify({ times, median }, null, 1));
  console.log(`browser verification (Intel root rejected, then simulated root): median ${median.toFixed(1)} ms, all ${times.map(t => t.toFixed(1)).join(', ')}`);
  // A measurement, not a timed test: benchmarks/bench_channel.py reports it against the
  // 50 ms target. Here we only check that every verification produced a time.
  assert.equal(times.filter(t => Number.isFinite(t) && t > 0).length, times.length);
}));

test('a kernel restart re-attests the new enclave process', { timeout: 300_000 }, step('restart', async () => {
  const { page } = ctx;
  const sessionRow = page.locator('.ppml-report tr', { hasText: 'Session' }).first();
  const before = await sessionRow.locator('td').innerText();
  await page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell').first().click();
  await page.locator('.lm-MenuBar-itemLabel', { hasText: /^Kernel$/ }).click();
  await page.locator('.lm-Menu-item:not(.lm-mod-disabled)', { hasText: /^Restart Kernel…/ }).first().click();
  await page.locator('.jp-Dialog-button', { hasText: /^Restart$/ }).click();
  await badge(page).and(page.locator('[data-ppml-phase="verifying"]')).waitFor({ timeout: 30_000 });
  await badge(page).and(page.locator('[data-ppml-phase="simulated"]')).waitFor({ timeout: 90_000 });
  await page.waitForFunction(
    old => {
      const rows = [...document.querySelectorAll('.ppml-report tr')];
      const row = rows.find(r => r.querySelector('th')?.textContent === 'Session');
      return row && row.querySelector('td')?.textContent && row.querySelector('td').textContent !== old;
    },
    before,
    { timeout: 30_000 }
  );
  // Sealed requests after the restart go on the new session (the new process is unowned
  // until this tab claims it again).
  const cell = await runCell(page, 2);
  await cell.locator('.jp-OutputArea-output').first().waitFor({ timeout: 60_000 });
  await shot(page, '06-reattested-after-restart');
}));

test('an enclave that does not match the policy is red and gets no secret', { timeout: 300_000 }, step('policy', async () => {
  const { page, port, token } = ctx;
  await page.keyboard.press('Control+s');
  await page.goto(`http://127.0.0.1:${port}/lab/tree/mismatch.ipynb?token=${token}`);
  // The reload restores demo.ipynb too; its approval survives the reload (same tab),
  // so exactly one dialog comes: the other kernel's.
  await page.getByText('Allow a SIMULATED enclave?').waitFor({ timeout: 120_000 });
  await page.getByRole('button', { name: 'Allow SIMULATED enclave' }).click();
  await page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell').first().click();
  await badge(page).and(page.locator('[data-ppml-phase="failed"]')).waitFor({ timeout: 60_000 });
  assert.equal(await page.getByText('Allow a SIMULATED enclave?').count(), 0);
  assert.match(await badge(page).innerText(), /policy mismatch: MRENCLAVE b{8}/);
  await shot(page, '07-policy-mismatch-badge');
  await badge(page).click();
  const mismatch = page.locator('.ppml-policy tr.ppml-mismatch', { hasText: 'MRENCLAVE' });
  await mismatch.waitFor();
  const cells = await mismatch.locator('td').allInnerTexts();
  assert.equal(cells[0], GOOD_MRENCLAVE);
  assert.equal(cells[1], BAD_MRENCLAVE);
  await shot(page, '08-policy-mismatch-report');
  const cell = await runCell(page, 0);
  // Fail closed: the request never left this browser; the cell says why.
  await cell.locator('.jp-OutputArea-output').getByText(/nothing was sent to the kernel: policy mismatch/).waitFor({ timeout: 60_000 });
  assert.equal(await page.locator('.ppml-secret-dialog').count(), 0);
  await shot(page, '09-secret-refused');
}));

test("the secret's bytes never crossed the Jupyter server", async () => {
  const { frames, http, log, work, page } = ctx;
  await page.keyboard.press('Control+s');
  await new Promise(r => setTimeout(r, 1000));
  assert.ok(frames.length > 50, `only ${frames.length} websocket frames recorded`);
  const channelFrames = frames.filter(f => Buffer.from(f.payload).includes(Buffer.from('ppml.attest/2')) || Buffer.from(f.payload).includes(Buffer.from('"sealed"')));
  assert.ok(channelFrames.length > 5, 'no channel traffic recorded');
  const leaks = frames.filter(f => containsSecret(f.payload)).map(f => `${f.dir} ${f.url}`);
  assert.deepEqual(leaks, []);
  assert.deepEqual(http.filter(h => containsSecret(h.body)).map(h => h.url), []);
  assert.equal(containsSecret(fs.readFileSync(log)), false, 'secret in the server log');
  for (const f of fs.readdirSync(work, { recursive: true })) {
    const p = path.join(work, String(f));
    if (fs.statSync(p).isFile()) {
      assert.equal(containsSecret(fs.readFileSync(p)), false, `secret in ${f}`);
    }
  }
  fs.writeFileSync(path.join(ARTIFACTS, 'frames-checked.txt'), `${frames.length} websocket frames, ${http.length} HTTP messages, 0 containing the secret\n`);
});

test('Notebook 7 shows the badge in the notebook toolbar; a plain Python kernel shows none', { timeout: 240_000 }, step('notebook7-and-plain', async () => {
  const { port, token } = ctx;
  // Same browser profile (same owner key, same remembered simulated root): no dialog.
  const page = await ctx.context.newPage();
  record(page, 'owner');
  try {
    // Notebook 7 (the `notebook` package) is served by the same Jupyter server.
    await page.goto(`http://127.0.0.1:${port}/notebooks/demo.ipynb?token=${token}`);
    const toolbarBadge = page.locator('.jp-NotebookPanel-toolbar .ppml-status[data-ppml-phase="simulated"]');
    await toolbarBadge.waitFor({ timeout: 60_000 });
    assert.match(await toolbarBadge.innerText(), /SIMULATED/);
    assert.equal(await page.getByText('Allow a SIMULATED enclave?').count(), 0, 'the approval of this simulated root is remembered');
    await page.screenshot({ path: path.join(ARTIFACTS, '10-notebook7-badge.png') });

    // A notebook on a stock Python kernel: the extension stays silent.
    // (a workspace of its own, so no PPML notebook from the other tests is restored)
    await page.goto(`http://127.0.0.1:${port}/lab/workspaces/plain/tree/plain.ipynb?token=${token}`);
    await page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').first().waitFor({ timeout: 120_000 }).catch(() => undefined);
    await page.locator('#jp-main-statusbar').waitFor({ timeout: 60_000 });
    await page.waitForTimeout(3000);
    const shown = page.locator('#jp-main-statusbar .ppml-status, .jp-NotebookPanel:not(.lm-mod-hidden) .ppml-status');
    assert.ok((await shown.count()) > 0, 'the badge widgets exist (and must stay empty)');
    const phases = await shown.evaluateAll(nodes => nodes.map(n => [n.getAttribute('data-ppml-phase'), n.textContent]));
    assert.ok(phases.every(([phase, text]) => (phase === 'none' || phase === 'not-ppml') && !text), JSON.stringify(phases));
    assert.equal(await page.getByText('Allow a SIMULATED enclave?').count(), 0);
    await page.screenshot({ path: path.join(ARTIFACTS, '11-plain-kernel-no-badge.png') });
  } finally {
    await page.close();
  }
}));


/** Every encoding in which a string could cross the server (raw, base64, hex, JSON-escaped). */
function leaks(needle, data) {
  const buf = Buffer.isBuffer(data) ? data : Buffer.from(String(data ?? ''), 'utf8');
  const raw = Buffer.from(needle, 'utf8');
  return [raw, Buffer.from(raw.toString('base64')), Buffer.from(raw.toString('hex')), Buffer.from(JSON.stringify(needle).slice(1, -1))].some(e => buf.includes(e));
}

async function openNotebookPage(page, file, workspace) {
  const { port, token } = ctx;
  await page.goto(`http://127.0.0.1:${port}/lab/workspaces/${workspace}/tree/${file}?token=${token}`);
  await page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell').first().waitFor({ timeout: 120_000 });
}

test('wire capture: code, outputs, plot, widget, input() and traceback never cross the server; the .ipynb keeps outputs sealed', { timeout: 600_000 }, step('wire-capture', async () => {
  const { page, work } = ctx;
  const start = ctx.frames.length;
  const httpStart = ctx.http.length;
  await openNotebookPage(page, 'wire.ipynb', 'wire');
  const outputOf = i => page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell').nth(i).locator('.jp-OutputArea-output');
  // A new kernel process: this browser's owner key claims it (simulated root remembered).
  await badge(page).and(page.locator('[data-ppml-phase="simulated"]')).waitFor({ timeout: 120_000 });
  await runCell(page, 0);
  const dialog = page.locator('.ppml-secret-dialog');
  await dialog.waitFor({ timeout: 60_000 });
  await dialog.locator('.ppml-secret-input').fill(WIRE_SECRET);
  await dialog.getByRole('button', { name: 'Send encrypted' }).click();
  await outputOf(0).getByText("Secret 'wire_key' arrived end-to-end encrypted").waitFor({ timeout: 60_000 });
  await page.waitForFunction(() => /· sealed$/.test(document.querySelector('#jp-main-statusbar .ppml-status')?.textContent ?? ''), null, { timeout: 30_000 });
  await runCell(page, 1);
  await outputOf(1).getByText(`derived ${DERIVED}`).waitFor({ timeout: 60_000 });
  await runCell(page, 2);
  await outputOf(2).locator('table').getByText(DF_VALUES[1]).waitFor({ timeout: 60_000 });
  await runCell(page, 3);
  const img = outputOf(3).locator('img');
  await img.waitFor({ timeout: 120_000 });
  const png = (await img.getAttribute('src')).replace(/^data:image\/png;base64,/, '');
  assert.ok(png.length > 1000, 'the plot arrived');
  await runCell(page, 4);
  await outputOf(4).locator('.widget-slider, .jupyter-widgets').first().waitFor({ timeout: 60_000 });
  assert.match(await outputOf(4).innerText(), /37/);
  await runCell(page, 5);
  const stdin = page.locator('.jp-Stdin-input');
  await stdin.waitFor({ timeout: 60_000 });
  await stdin.fill(ANSWER);
  await stdin.press('Enter');
  await outputOf(5).getByText(`reversed: ${ANSWER_REVERSED}`).waitFor({ timeout: 60_000 });
  await runCell(page, 6);
  await outputOf(6).getByText(TB_VALUE).first().waitFor({ timeout: 60_000 });
  await shot(page, '12-wire-capture-notebook');
  await page.keyboard.press('Control+s');
  await page.waitForTimeout(2000);

  const frames = ctx.frames.slice(start);
  const http = ctx.http.slice(httpStart);
  assert.ok(frames.filter(f => Buffer.from(f.payload).includes(Buffer.from('"ppml_sealed"'))).length > 20, 'sealed notebook messages on the wire');
  const secretValues = { WIRE_SECRET, DERIVED, DF_VALUE: DF_VALUES[1], TB_VALUE, ANSWER, ANSWER_REVERSED, PNG: png.slice(200, 400) };
  const nb = fs.readFileSync(path.join(work, 'wire.ipynb'));
  const log = fs.readFileSync(ctx.log);
  const found = [];
  for (const [name, value] of Object.entries({ ...secretValues, CODE_MARK })) {
    if (frames.some(f => leaks(value, f.payload))) {
      found.push(`${name} in a websocket frame`);
    }
  }
  for (const [name, value] of Object.entries(secretValues)) {
    for (const h of http) {
      if (leaks(value, h.body)) {
        found.push(`${name} in HTTP ${h.url}`);
      }
    }
    if (leaks(value, log)) {
      found.push(`${name} in the server log`);
    }
    if (leaks(value, nb)) {
      found.push(`${name} in the saved wire.ipynb`);
    }
  }
  assert.deepEqual(found, []);
  // Source sealing is off: the code is readable in the file, the outputs are not.
  assert.ok(nb.includes(Buffer.from(CODE_MARK)), 'with sealCellSources off the code is in the .ipynb');
  const saved = JSON.parse(nb.toString('utf8'));
  const sealedCells = saved.cells.filter(c => c.outputs?.length === 1 && c.outputs[0].data?.['application/vnd.ppml.sealed-output+json']);
  assert.equal(sealedCells.length, 7, 'every executed cell has one sealed output');
  fs.writeFileSync(
    path.join(ARTIFACTS, 'wire-capture.txt'),
    `${frames.length} websocket frames, ${http.length} HTTP messages, the server log and wire.ipynb checked: ` +
      `no code (${CODE_MARK}) in any frame; no secret, secret-derived value, DataFrame value, plot bytes, input() answer or traceback anywhere\n`
  );

  // Same browser profile: the outputs come back.
  await page.reload();
  await page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell').first().waitFor({ timeout: 120_000 });
  await outputOf(1).getByText(`derived ${DERIVED}`).waitFor({ timeout: 60_000 });
  await outputOf(2).locator('table').getByText(DF_VALUES[1]).waitFor({ timeout: 60_000 });
  await outputOf(6).getByText(TB_VALUE).first().waitFor({ timeout: 60_000 });
  await shot(page, '13-reopened-same-profile');
}));

test('the relay as a second browser: another profile on an owned kernel is refused visibly and sends nothing', { timeout: 300_000 }, step('second-browser', async () => {
  const other = await ctx.browser.newContext({ viewport: { width: 1400, height: 900 } });
  const page = await other.newPage();
  const start = ctx.frames.length;
  record(page, 'stranger');
  try {
    await openNotebookPage(page, 'wire.ipynb', 'stranger');
    // Its own owner key is not in the verified owner list: refused before any approval dialog.
    await badge(page).and(page.locator('[data-ppml-phase="failed"]')).waitFor({ timeout: 120_000 });
    assert.match(await badge(page).innerText(), /another party controls this kernel/);
    assert.equal(await page.getByRole('button', { name: 'Allow SIMULATED enclave' }).count(), 0, 'no approval asked for a kernel it cannot use');
    // Placeholders where the owner's browser shows outputs.
    const out1 = page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell').nth(1).locator('.jp-OutputArea-output');
    await out1.getByText('[sealed output').waitFor({ timeout: 30_000 });
    assert.equal(await page.getByText(DERIVED).count(), 0);
    await shot(page, '14-fresh-profile-placeholders-and-refusal');
    // Running a cell: refused locally, nothing leaves the browser.
    const cell = await runCell(page, 1);
    await cell.locator('.jp-OutputArea-output').getByText(/nothing was sent to the kernel: another party controls this kernel/).waitFor({ timeout: 60_000 });
    await shot(page, '15-fresh-profile-cell-refused');
    const sent = ctx.frames.slice(start).filter(f => f.who === 'stranger' && f.dir === 'sent').map(f => Buffer.from(f.payload));
    assert.ok(sent.some(b => b.includes(Buffer.from('ppml.attest/2'))), 'it attested');
    assert.equal(sent.filter(b => b.includes(Buffer.from('execute_request'))).length, 0, 'no execute_request left the stranger');
    assert.equal(sent.filter(b => b.includes(Buffer.from('"sealed"'))).length, 0, 'no sealed frame (no finished, no secret) left the stranger');
  } finally {
    await other.close();
  }
  // The owner's browser still works on the same kernel.
  const own = ctx.page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell').nth(1);
  await runCell(ctx.page, 1);
  await own.locator('.jp-OutputArea-output').getByText(`derived ${DERIVED}`).waitFor({ timeout: 60_000 });
}));

test('sealing cell sources: the code leaves the .ipynb, the same browser restores it', { timeout: 300_000 }, step('seal-sources', async () => {
  const { page, work, settings } = ctx;
  writeJson(path.join(settings, 'jupyterlab-ppml', 'plugin.jupyterlab-settings'), {
    policy: { mrenclave: [GOOD_MRENCLAVE], allowed_tcb_statuses: ['UpToDate', 'SWHardeningNeeded'] },
    sealCellSources: true
  });
  await page.reload();
  await page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell').first().waitFor({ timeout: 120_000 });
  await badge(page).and(page.locator('[data-ppml-phase="simulated"]')).waitFor({ timeout: 120_000 });
  // Make it dirty so that it is saved.
  await page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell').nth(0).locator('.jp-InputArea-editor').click();
  await page.keyboard.press('End');
  await page.keyboard.type(' ');
  await page.keyboard.press('Control+s');
  await page.waitForTimeout(2000);
  const nb = fs.readFileSync(path.join(work, 'wire.ipynb'));
  assert.equal(nb.includes(Buffer.from(CODE_MARK)), false, 'with sealCellSources on the code is not in the .ipynb');
  await page.reload();
  await page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell').first().waitFor({ timeout: 120_000 });
  await page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell').nth(1).getByText(CODE_MARK).first().waitFor({ timeout: 60_000 });
  await shot(page, '16-sealed-sources-restored');
}));

test('sealed vs unsealed cell round trip on the same kernel (headless Chromium)', { timeout: 300_000 }, step('round-trip', async () => {
  const { page } = ctx;
  await openNotebookPage(page, 'bench.ipynb', 'bench');
  await badge(page).and(page.locator('[data-ppml-phase="simulated"]')).waitFor({ timeout: 120_000 });
  await runCell(page, 0);
  await page.waitForTimeout(1000);
  const result = await page.evaluate(async () => {
    const app = window.jupyterapp;
    const kc = app.shell.currentWidget.sessionContext.session.kernel;
    // An unsealed connection to the same (teaching, not sealed-mode) kernel: built with
    // the connection's own class, outside the kernel manager, so no gate is installed.
    const plain = new kc.constructor({ model: kc.model, serverSettings: kc.serverSettings, username: kc.username, handleComms: false });
    await plain.info;
    const run = async k => {
      const t0 = performance.now();
      await k.requestExecute({ code: 'x = 1', silent: false, store_history: false }).done;
      return performance.now() - t0;
    };
    const sealed = [];
    const unsealed = [];
    for (let i = 0; i < 5; i++) {
      await run(kc);
      await run(plain);
    }
    for (let i = 0; i < 40; i++) {
      sealed.push(await run(kc));
      unsealed.push(await run(plain));
    }
    plain.dispose();
    const median = a => {
      const s = [...a].sort((x, y) => x - y);
      return (s[(s.length - 1) >> 1] + s[s.length >> 1]) / 2;
    };
    return { sealed: median(sealed), unsealed: median(unsealed), n: sealed.length, gate: kc.__ppmlGate?.counts };
  });
  const ratio = result.sealed / result.unsealed;
  fs.writeFileSync(path.join(ARTIFACTS, 'round-trip.json'), JSON.stringify({ ...result, ratio }, null, 1));
  console.log(`cell round trip in headless Chromium, same kernel: sealed median ${result.sealed.toFixed(2)} ms, unsealed ${result.unsealed.toFixed(2)} ms, ratio ${ratio.toFixed(3)} (n=${result.n}; goal <= 1.10)`);
  assert.ok(result.gate && result.gate.sealed > 40, 'the measured requests went through the gate sealed');
  assert.ok(Number.isFinite(ratio));
}));
