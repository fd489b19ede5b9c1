/**
 * The policy in force in this browser window, from the extension's settings.
 *
 * Fails closed: while the setting is invalid, another (unknown) setting is present, or
 * the settings could not be loaded at all (e.g. not JSON5), there is no policy, and
 * `current()` throws, so every enclave is refused with a message naming the setting and
 * the problem. It never falls back to the (laxer) default. The settings schema is
 * permissive on purpose: the Jupyter server answers a settings file that breaks its
 * schema with `{}` (only logging a warning), which would silently apply the defaults; so
 * every value must reach this check instead. Only when the extension has
 * no settings registry at all (nothing the user configured can be ignored) does the
 * default policy apply.
 */

import { defaultPolicy, parsePolicy, Policy } from './policy';

/** The settings plugin's key holding the policy. */
export const POLICY_SETTING = 'policy';

export class PolicyUnavailableError extends Error {}

export class PolicyState {
  private _policy: Policy | null = defaultPolicy();
  private _problem: string | null = null;
  private readonly listeners = new Set<() => void>();

  /** The policy, or throw: every enclave is refused while the setting is unusable. */
  current(): Policy {
    if (this._policy === null) {
      throw new PolicyUnavailableError(this._problem ?? `the '${POLICY_SETTING}' setting is unusable`);
    }
    return this._policy;
  }

  /** Why every enclave is refused, or null when a policy is in force. */
  get problem(): string | null {
    return this._problem;
  }

  /** Called after every change (valid or not), e.g. to verify open kernels again. */
  onChange(listener: () => void): void {
    this.listeners.add(listener);
  }

  /** Use the composite settings (`{policy: ...}`) as loaded or changed in JupyterLab. */
  fromSettings(composite: Record<string, unknown> | null | undefined): void {
    const unknown = Object.keys(composite ?? {}).filter(k => k !== POLICY_SETTING);
    if (unknown.length) {
      this.refuse(`PPML settings: unknown setting '${unknown.sort()[0]}' (the only one is '${POLICY_SETTING}')`);
      return;
    }
    try {
      const value = composite?.[POLICY_SETTING];
      this.set(parsePolicy(value === undefined ? {} : value), null);
    } catch (e) {
      this.refuse(`PPML setting '${POLICY_SETTING}' is invalid: ${(e as Error).message}`);
    }
  }

  /** The settings could not be loaded (or read): refuse every enclave, say why. */
  loadFailed(error: unknown): void {
    const detail = error instanceof Error ? error.message : describe(error);
    this.refuse(`PPML settings could not be loaded (setting '${POLICY_SETTING}' unusable): ${detail}`);
  }

  private refuse(problem: string): void {
    this.set(null, `${problem}; every enclave is refused until the setting is fixed`);
  }

  private set(policy: Policy | null, problem: string | null): void {
    this._policy = policy;
    this._problem = problem;
    for (const listener of this.listeners) {
      try {
        listener();
      } catch (e) {
        console.error('jupyterlab-ppml: policy listener failed', e);
      }
    }
  }
}

/** JupyterLab's validation errors are arrays of {instancePath, message}. */
function describe(error: unknown): string {
  if (Array.isArray(error)) {
    return error
      .map(e => (typeof e === 'object' && e ? `${(e as any).instancePath ?? (e as any).dataPath ?? ''} ${(e as any).message ?? ''}`.trim() : String(e)))
      .join('; ');
  }
  try {
    return JSON.stringify(error) ?? String(error);
  } catch {
    return String(error);
  }
}
