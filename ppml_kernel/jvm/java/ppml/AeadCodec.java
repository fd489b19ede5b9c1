/*
 * ppml-aead/1 files as a Hadoop "compression" codec, so Spark's own CSV, JSON and text
 * readers read encrypted files without a Python worker per task.
 *
 * Hadoop picks a codec by file suffix (".ppml"); a codec that is not splittable makes
 * Spark read each file whole in one task, decrypting chunk after chunk in constant
 * memory (AeadInputStream). The data key of each file is unwrapped by the kernel's key
 * broker (BrokerClient), never derived here: this JVM holds no KEK.
 *
 * Read only: writing through Hadoop would bypass the kernel's writers and their checks.
 * Enabled by "spark.hadoop.io.compression.codecs=ppml.AeadCodec" (ppml_kernel/data/codec.py).
 */
package ppml;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import org.apache.hadoop.conf.Configurable;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.io.compress.CompressionCodec;
import org.apache.hadoop.io.compress.CompressionInputStream;
import org.apache.hadoop.io.compress.CompressionOutputStream;
import org.apache.hadoop.io.compress.Compressor;
import org.apache.hadoop.io.compress.Decompressor;

public final class AeadCodec implements CompressionCodec, Configurable {
  public static final String EXTENSION = ".ppml";

  private Configuration conf;

  @Override
  public void setConf(Configuration conf) {
    this.conf = conf;
  }

  @Override
  public Configuration getConf() {
    return conf;
  }

  @Override
  public CompressionInputStream createInputStream(InputStream in) throws IOException {
    return new AeadInputStream(in, BrokerClient.forConf(conf));
  }

  @Override
  public CompressionInputStream createInputStream(InputStream in, Decompressor decompressor)
      throws IOException {
    return createInputStream(in);
  }

  @Override
  public Class<? extends Decompressor> getDecompressorType() {
    return null;
  }

  @Override
  public Decompressor createDecompressor() {
    return null; // decryption needs no pooled state; CodecPool accepts null
  }

  @Override
  public CompressionOutputStream createOutputStream(OutputStream out) throws IOException {
    throw new IOException("ppml.AeadCodec only reads ppml-aead/1 files; write encrypted "
        + "data with sparkio.write or %ppml save");
  }

  @Override
  public CompressionOutputStream createOutputStream(OutputStream out, Compressor compressor)
      throws IOException {
    return createOutputStream(out);
  }

  @Override
  public Class<? extends Compressor> getCompressorType() {
    return null;
  }

  @Override
  public Compressor createCompressor() {
    return null;
  }

  @Override
  public String getDefaultExtension() {
    return EXTENSION;
  }
}
