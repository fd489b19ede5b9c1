/**
 * Certificate path validation with CRLs, following rustls-webpki as dcap-qvl configures
 * it: every certificate below the trust anchor must be within its validity period, have
 * the right basic constraints for its role, be signed by its issuer and be covered by
 * an authoritative CRL that is correctly signed, not expired (now < nextUpdate) and does
 * not list it. The anchor contributes only its subject and key (its own dates are not
 * checked, as in webpki); the anchor itself is checked against the root CA CRL separately.
 */

import { equal } from './bytes';
import {
  basicConstraints,
  Certificate,
  Crl,
  crlIsAuthoritative,
  ekuAllowsServerAuth,
  mayIssueCrls,
  parseCertificate,
  verifySigned
} from './x509';

export class ChainError extends Error {}

export interface Anchor {
  subject: Uint8Array;
  spki: Uint8Array;
}

function checkIndependent(cert: Certificate, now: number, isIssuer: boolean, subCaCount: number): void {
  if (cert.notBefore > cert.notAfter) {
    throw new ChainError('certificate validity is inverted');
  }
  if (now < cert.notBefore) {
    throw new ChainError('certificate is not valid yet');
  }
  if (now > cert.notAfter) {
    throw new ChainError('certificate has expired');
  }
  const [ca, pathLen] = basicConstraints(cert);
  if (!isIssuer && ca) {
    throw new ChainError('a CA certificate is used as an end entity');
  }
  if (isIssuer && !ca) {
    throw new ChainError('an end-entity certificate is used as a CA');
  }
  if (isIssuer && pathLen !== undefined && subCaCount > pathLen) {
    throw new ChainError('path length constraint violated');
  }
  if (!ekuAllowsServerAuth(cert)) {
    throw new ChainError('required extended key usage not found');
  }
}

async function checkSignedChain(path: Certificate[], anchor: Anchor, crls: Crl[], now: number): Promise<void> {
  // path[0] is the end entity; walk from the certificate the anchor signed downwards.
  let issuerSpki = anchor.spki;
  let issuerKeyUsage: Uint8Array | undefined;
  for (let i = path.length - 1; i >= 0; i--) {
    const cert = path[i];
    if (cert.nameConstraints) {
      throw new ChainError('name constraints are not supported');
    }
    if (!(await verifySigned(cert.signed, issuerSpki))) {
      throw new ChainError('certificate signature is invalid');
    }
    const crl = crls.find(c => crlIsAuthoritative(c, cert, i > 0));
    if (!crl) {
      throw new ChainError('no CRL covers this certificate (unknown revocation status)');
    }
    if (!(await verifySigned(crl.signed, issuerSpki))) {
      throw new ChainError('CRL signature is invalid');
    }
    if (now >= crl.nextUpdate) {
      throw new ChainError('CRL has expired');
    }
    if (!mayIssueCrls(issuerKeyUsage)) {
      throw new ChainError('issuer is not allowed to sign CRLs');
    }
    if (crl.revoked.some(serial => equal(serial, cert.serial))) {
      throw new ChainError('certificate is revoked');
    }
    issuerSpki = cert.spki;
    issuerKeyUsage = cert.keyUsage;
  }
}

/**
 * Validate `leaf` up to `anchor` through any of `intermediates` (DER, tried in order,
 * parsed lazily as webpki does). Throws ChainError with the most specific reason.
 */
export async function verifyChain(
  leaf: Certificate,
  intermediates: Uint8Array[],
  anchor: Anchor,
  crls: Crl[],
  now: number
): Promise<void> {
  let lastError: Error = new ChainError('unknown issuer');
  const budget = { calls: 0 };

  const build = async (path: Certificate[], subCaCount: number): Promise<boolean> => {
    const head = path[path.length - 1];
    checkIndependent(head, now, path.length > 1, subCaCount);
    if (equal(head.issuer, anchor.subject)) {
      try {
        await checkSignedChain(path, anchor, crls, now);
        return true;
      } catch (e) {
        lastError = e as Error;
      }
    }
    for (const der of intermediates) {
      if (++budget.calls > 1000) {
        throw new ChainError('path building budget exhausted');
      }
      let candidate: Certificate;
      try {
        candidate = parseCertificate(der);
      } catch (e) {
        lastError = e as Error;
        continue;
      }
      if (!equal(candidate.subject, head.issuer)) {
        continue;
      }
      if (path.some(p => equal(p.spki, candidate.spki) && equal(p.subject, candidate.subject))) {
        continue;
      }
      if (path.length >= 7) {
        lastError = new ChainError('certificate path is too long');
        continue;
      }
      try {
        if (await build([...path, candidate], path.length > 1 ? subCaCount + 1 : subCaCount)) {
          return true;
        }
      } catch (e) {
        lastError = e as Error;
      }
    }
    return false;
  };

  if (!(await build([leaf], 0))) {
    throw lastError;
  }
}
