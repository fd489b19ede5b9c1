/** Browser-side DCAP verification (no JupyterLab imports: runs under Node for tests). */

export * from './bytes';
export * from './collateral';
export * from './policy';
export * from './quote';
export * from './roots';
export * from './verify';
export { pemBlocks, parseCertificate, parseCrl } from './x509';
