/**
 * What every browser suite here needs: a real `jupyter lab` on 127.0.0.1 in a private
 * temporary JUPYTER_PATH, with THIS checkout's built extension (linked from
 * <repo>/ppml_kernel/labextension) and PPML kernelspecs that import THIS checkout's
 * ppml_kernel on the simulated enclave; and Debian's chromium driven by playwright-core.
 *
 * Not a test file (no `.test.` in its name): `node --test` does not run it.
 *
 * Needs: the extension built (jlpm build:prod), chromium at /usr/bin/chromium (or
 * $CHROMIUM), a Python with jupyterlab + this repository's deps ($PPML_PYTHON, default
 * <repo>/.venv/bin/python).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(HERE, '..', '..', '..');
export const PYTHON = process.env.PPML_PYTHON || path.join(REPO, '.venv', 'bin', 'python');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const LABEXT = path.join(REPO, 'ppml_kernel', 'labextension');
export const artifactsDir = name => path.join(REPO, 'test-artifacts', name);

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}

export function writeJson(file, data) {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, JSON.stringify(data, null, 1));
}

/** A PPML kernelspec on the simulated enclave, importing this checkout. */
export function kernelSpec(share, name, display, env) {
  writeJson(path.join(share, 'kernels', name, 'kernel.json'), {
    argv: [PYTHON, '-m', 'ppml_kernel', '-f', '{connection_file}'],
    display_name: display,
    language: 'python',
    env: { PYTHONPATH: REPO, PPML_TEE: 'simulated', ...env }
  });
}

/** A notebook of code cells (ids cell-0, cell-1, ...) on `kernel`. */
export function notebook(kernel, cells) {
  return {
    cells: cells.map((source, i) => ({ cell_type: 'code', id: `cell-${i}`, execution_count: null, metadata: {}, outputs: [], source })),
    metadata: { kernelspec: { name: kernel, display_name: kernel, language: 'python' } },
    nbformat: 4,
    nbformat_minor: 5
  };
}

export async function waitForServer(url, proc, timeoutMs = 90_000) {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (proc.exitCode !== null) {
      throw new Error(`jupyter lab exited with ${proc.exitCode}`);
    }
    try {
      if ((await fetch(url)).ok) {
        return;
      }
    } catch (e) {
      // not up yet
    }
    await new Promise(r => setTimeout(r, 500));
  }
  throw new Error('jupyter lab did not start');
}

/**
 * Start `jupyter lab` in a fresh temporary directory.
 *
 * `kernels`: { name: { display, env } } (each gets its own simulated PKI unless `env`
 * names one); `settings`: this extension's plugin settings; `notebooks`: { file: json };
 * `extraArgs`: more server options. JupyterLab's news and update checks are off.
 * Returns { tmp, share, work, settings, log, port, token, server, url(p) }.
 */
export async function startLab({ prefix, kernels = {}, settings, notebooks = {}, extraArgs = [] }) {
  assert.ok(fs.existsSync(path.join(LABEXT, 'package.json')), 'build the extension first: jlpm build:prod');
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const share = path.join(tmp, 'share', 'jupyter');
  fs.mkdirSync(path.join(share, 'labextensions'), { recursive: true });
  fs.symlinkSync(LABEXT, path.join(share, 'labextensions', 'jupyterlab-ppml'));
  for (const [name, { display, env }] of Object.entries(kernels)) {
    kernelSpec(share, name, display, { PPML_SIM_PKI_DIR: path.join(tmp, `pki-${name}`), ...env });
  }
  const settingsDir = path.join(tmp, 'settings');
  writeJson(path.join(settingsDir, '@jupyterlab', 'apputils-extension', 'notification.jupyterlab-settings'), {
    fetchNews: 'false',
    checkForUpdates: false
  });
  if (settings !== undefined) {
    writeJson(path.join(settingsDir, 'jupyterlab-ppml', 'plugin.jupyterlab-settings'), settings);
  }
  const work = path.join(tmp, 'work');
  fs.mkdirSync(work);
  for (const [file, nb] of Object.entries(notebooks)) {
    writeJson(path.join(work, file), nb);
  }
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
      `--LabApp.user_settings_dir=${settingsDir}`, `--LabApp.workspaces_dir=${path.join(tmp, 'workspaces')}`,
      '--ServerApp.allow_root=True',
      ...extraArgs
    ],
    { env, stdio: ['ignore', fs.openSync(log, 'w'), fs.openSync(log, 'a')] }
  );
  const lab = { tmp, share, work, settings: settingsDir, log, port, token, server };
  lab.url = p => `http://127.0.0.1:${port}/${p}${p.includes('?') ? '&' : '?'}token=${token}`;
  await waitForServer(`http://127.0.0.1:${port}/api/status?token=${token}`, server);
  return lab;
}

export async function launchChromium() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run']
  });
}

/** Close the browser, then the server (SIGTERM, SIGKILL after 2 s). */
export async function stopLab(lab, browser) {
  await browser?.close();
  const server = lab?.server;
  if (server && server.exitCode === null) {
    server.kill('SIGTERM');
    await new Promise(r => setTimeout(r, 2000));
    if (server.exitCode === null) {
      server.kill('SIGKILL');
    }
  }
}

/** The badge in JupyterLab's status bar. */
export const badge = page => page.locator('#jp-main-statusbar .ppml-status');

/** Run the `index`th cell of the visible notebook (click its editor, Shift+Enter). */
export async function runCell(page, index) {
  const cell = page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell').nth(index);
  await cell.locator('.jp-InputArea-editor').click();
  await page.keyboard.press('Shift+Enter');
  return cell;
}

/** Allow the simulated enclave once (the dialog) and wait for the SIMULATED badge. */
export async function allowSimulated(page, timeout = 120_000) {
  await page.getByText('Allow a SIMULATED enclave?').waitFor({ timeout });
  await page.getByRole('button', { name: 'Allow SIMULATED enclave' }).click();
  await badge(page).and(page.locator('[data-ppml-phase="simulated"]')).waitFor({ timeout: 60_000 });
}
