/**
 * End to end in a real browser: Debian's chromium driven by playwright-core against a
 * real `jupyter lab` on 127.0.0.1, with the built extension and the real PPML kernel
 * (`python -m ppml_kernel`) on the simulated enclave, each kernelspec with its own
 * simulated PKI.
 *
 * Checks: the simulated-enclave approval, the badge, `%ppml secret` answered in the
 * dialog and used by the kernel, every websocket frame and HTTP body crossing the
 * Jupyter server (plus the server log and the saved notebooks) free of the secret's
 * bytes, re-attestation after a restart, a policy mismatch shown in red with secrets
 * refused, and the browser's verification time. Screenshots go to
 * test-artifacts/e2e/ at the repository root.
 *
 * Needs: the extension built (jlpm build:prod), chromium at /usr/bin/chromium (or
 * $CHROMIUM), a Python with jupyterlab + this repository's deps ($PPML_PYTHON, default
 * <repo>/.venv/bin/python). Run: jlpm test:e2e
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..', '..');
const PYTHON = process.env.PPML_PYTHON || path.join(REPO, '.venv', 'bin', 'python');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = path.join(REPO, 'test-artifacts', 'e2e');
const LABEXT = path.join(REPO, 'ppml_kernel', 'labextension');
const GOOD_MRENCLAVE = 'aa'.repeat(32);
const BAD_MRENCLAVE = 'bb'.repeat(32);
// The secret: its bytes must never cross the Jupyter server in any encoding we can spot.
const SECRET = `pw-${randomBytes(12).toString('hex')}-Ünïcode`;
const SECRET_SHA = createHash('sha256').update(SECRET, 'utf8').digest('hex').slice(0, 16);

const ctx = {};

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}

function writeJson(file, data) {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, JSON.stringify(data, null, 1));
}

function kernelSpec(dir, name, display, env) {
  writeJson(path.join(dir, 'kernels', name, 'kernel.json'), {
    argv: [PYTHON, '-m', 'ppml_kernel', '-f', '{connection_file}'],
    display_name: display,
    language: 'python',
    env: { PYTHONPATH: REPO, PPML_TEE: 'simulated', ...env }
  });
}

function notebook(kernel, cells) {
  return {
    cells: cells.map(source => ({ cell_type: 'code', execution_count: null, metadata: {}, outputs: [], source })),
    metadata: { kernelspec: { name: kernel, display_name: kernel, language: 'python' } },
    nbformat: 4,
    nbformat_minor: 5
  };
}

async function waitForServer(url, proc, timeoutMs = 90_000) {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (proc.exitCode !== null) {
      throw new Error(`jupyter lab exited with ${proc.exitCode}`);
    }
    try {
      const r = await fetch(url);
      if (r.ok) {
        return;
      }
    } catch (e) {
      // not up yet
    }
    await new Promise(r => setTimeout(r, 500));
  }
  throw new Error('jupyter lab did not start');
}

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
  assert.ok(fs.existsSync(path.join(LABEXT, 'package.json')), 'build the extension first: jlpm build:prod');
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ppml-e2e-'));
  const share = path.join(tmp, 'share', 'jupyter');
  fs.mkdirSync(path.join(share, 'labextensions'), { recursive: true });
  fs.symlinkSync(LABEXT, path.join(share, 'labextensions', 'jupyterlab-ppml'));
  kernelSpec(share, 'ppml-demo', 'PPML demo (simulated enclave)', {
    PPML_SIM_PKI_DIR: path.join(tmp, 'pki-demo'),
    PPML_SIM_MRENCLAVE: GOOD_MRENCLAVE
  });
  kernelSpec(share, 'ppml-mismatch', 'PPML other enclave (simulated enclave)', {
    PPML_SIM_PKI_DIR: path.join(tmp, 'pki-mismatch'),
    PPML_SIM_MRENCLAVE: BAD_MRENCLAVE
  });
  const settings = path.join(tmp, 'settings');
  writeJson(path.join(settings, '@jupyterlab', 'apputils-extension', 'notification.jupyterlab-settings'), {
    fetchNews: 'false',
    checkForUpdates: false
  });
  writeJson(path.join(settings, 'jupyterlab-ppml', 'plugin.jupyterlab-settings'), {
    policy: { mrenclave: [GOOD_MRENCLAVE], allowed_tcb_statuses: ['UpToDate', 'SWHardeningNeeded'] }
  });
  const work = path.join(tmp, 'work');
  fs.mkdirSync(work);
  writeJson(
    path.join(work, 'demo.ipynb'),
    notebook('ppml-demo', [
      '%ppml secret db_password --prompt "Password for the demo database"',
      'import hashlib, ppml_kernel.secrets as s\nprint("computed:", hashlib.sha256(s.get("db_password").encode()).hexdigest()[:16])',
      '%ppml secrets'
    ])
  );
  writeJson(path.join(work, 'mismatch.ipynb'), notebook('ppml-mismatch', ['%ppml secret db_password']));
  writeJson(path.join(work, 'plain.ipynb'), notebook('python3', ['1 + 1']));
  const port = await freePort();
  const token = randomBytes(16).toString('hex');
  const log = path.join(tmp, 'server.log');
  const env = {
    ...process.env,
    JUPYTER_PATH: share,
    JUPYTER_CONFIG_DIR: path.join(tmp, 'config'),
    JUPYTER_DATA_DIR: path.join(tmp, 'data'),
    JUPYTER_RUNTIME_DIR: path.join(tmp, 'runtime'),
    JUPYTER_PLATFORM_DIRS: '1'
  };
  const server = spawn(
    PYTHON,
    [
      '-m', 'jupyterlab', '--no-browser', '--ServerApp.ip=127.0.0.1', `--ServerApp.port=${port}`,
      `--IdentityProvider.token=${token}`, `--ServerApp.root_dir=${work}`,
      `--LabApp.user_settings_dir=${settings}`, `--LabApp.workspaces_dir=${path.join(tmp, 'workspaces')}`,
      '--ServerApp.log_level=DEBUG', '--ServerApp.allow_root=True'
    ],
    { env, stdio: ['ignore', fs.openSync(log, 'w'), fs.openSync(log, 'a')] }
  );
  Object.assign(ctx, { tmp, port, token, server, log, work, frames: [], http: [] });
  await waitForServer(`http://127.0.0.1:${port}/api/status?token=${token}`, server);
  ctx.browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run']
  });
  const page = await ctx.browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.on('websocket', ws => {
    ws.on('framesent', f => ctx.frames.push({ dir: 'sent', url: ws.url(), payload: f.payload }));
    ws.on('framereceived', f => ctx.frames.push({ dir: 'received', url: ws.url(), payload: f.payload }));
  });
  page.on('request', r => ctx.http.push({ url: r.url(), body: r.postData() ?? '' }));
  page.on('response', async r => {
    try {
      ctx.http.push({ url: r.url(), body: await r.body() });
    } catch (e) {
      // redirects and aborted requests have no body
    }
  });
  ctx.page = page;
});

after(async () => {
  await ctx.browser?.close();
  if (ctx.server && ctx.server.exitCode === null) {
    ctx.server.kill('SIGTERM');
    await new Promise(r => setTimeout(r, 2000));
    if (ctx.server.exitCode === null) {
      ctx.server.kill('SIGKILL');
    }
  }
});

const badge = page => page.locator('#jp-main-statusbar .ppml-status');

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

async function runCell(page, index) {
  const cell = page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell').nth(index);
  await cell.locator('.jp-InputArea-editor').click();
  await page.keyboard.press('Shift+Enter');
  return cell;
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
  await shot(page, '04-kernel-used-the-secret');

  await badge(page).click();
  const report = page.locator('.ppml-report');
  await report.getByText('Verification time in this browser').waitFor();
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
  await cell.locator('.jp-OutputArea-output').getByText(/rejected this kernel's enclave \(policy mismatch/).waitFor({ timeout: 60_000 });
  assert.equal(await page.locator('.ppml-secret-dialog').count(), 0);
  await shot(page, '09-secret-refused');
}));

test("the secret's bytes never crossed the Jupyter server", async () => {
  const { frames, http, log, work, page } = ctx;
  await page.keyboard.press('Control+s');
  await new Promise(r => setTimeout(r, 1000));
  assert.ok(frames.length > 50, `only ${frames.length} websocket frames recorded`);
  const channelFrames = frames.filter(f => Buffer.from(f.payload).includes(Buffer.from('ppml.attest/1')) || Buffer.from(f.payload).includes(Buffer.from('"sealed"')));
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
  const page = await ctx.browser.newPage({ viewport: { width: 1400, height: 900 } });
  try {
    // Notebook 7 (the `notebook` package) is served by the same Jupyter server.
    await page.goto(`http://127.0.0.1:${port}/notebooks/demo.ipynb?token=${token}`);
    await page.getByText('Allow a SIMULATED enclave?').waitFor({ timeout: 120_000 });
    await page.getByRole('button', { name: 'Allow SIMULATED enclave' }).click();
    const toolbarBadge = page.locator('.jp-NotebookPanel-toolbar .ppml-status[data-ppml-phase="simulated"]');
    await toolbarBadge.waitFor({ timeout: 60_000 });
    assert.match(await toolbarBadge.innerText(), /SIMULATED/);
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
