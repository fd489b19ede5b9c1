/*
 * A ppml-aead/1 file that cannot be read, in the words of ppml_kernel/data/errors.py.
 *
 * The message starts with the Python error's class name (TamperedChunkError, ...), so
 * one error vocabulary serves both readers and ppml_kernel/errors.py turns either into
 * the same one line. Spark names the file around it (FAILED_READ_FILE); the codec
 * cannot see the path.
 */
package ppml;

import java.io.IOException;

public final class AeadFileError extends IOException {
  private static final long serialVersionUID = 1L;
  public final String kind;

  AeadFileError(String kind, String message) {
    super(kind + ": " + message);
    this.kind = kind;
  }

  AeadFileError(String kind, String message, Throwable cause) {
    super(kind + ": " + message, cause);
    this.kind = kind;
  }
}
