// Port of syncclass/timecode.py read_timecode (tests/test_browser_timecode.py checks that
// both give the same answer on the same pictures). Plain ES module, no dependencies.
//
// The band is the top 1/8 of a picture: 2 rows x 34 cells; the first and last cell of each
// row are white/black references, the 64 others carry capture_ms (48 bits, Unix epoch ms),
// source (8 bits) and a CRC-8/ITU (8 bits), most significant bit first, white = 1.

export const TIMECODE_BAND = 1 / 8;
export const ROWS = 2;
export const COLUMNS = 34;
const SAMPLE_OFFSETS = [-0.15, 0.0, 0.15];
const MIN_CONTRAST = 80.0;
const MIN_MARGIN = 0.2;
const f32 = Math.fround;

const CRC8_TABLE = (() => {
  const table = new Uint8Array(256);
  for (let byte = 0; byte < 256; byte++) {
    let crc = byte;
    for (let i = 0; i < 8; i++) crc = crc & 0x80 ? ((crc << 1) ^ 0x07) & 0xff : (crc << 1) & 0xff;
    table[byte] = crc;
  }
  return table;
})();

/** CRC-8/ITU (poly 0x07, init 0x00, xorout 0x55) of a byte array. */
export function crc8(bytes) {
  let crc = 0;
  for (const b of bytes) crc = CRC8_TABLE[crc ^ b];
  return crc ^ 0x55;
}

/** Height in px of the band of the timecode in a picture `height` px tall (rounded up). */
export function timecodeBandHeight(height) {
  return Math.ceil(height * TIMECODE_BAND);
}

/**
 * Read the timecode of the picture whose luma plane is `luma` (any indexable array of
 * 0..255 values, `stride` values per row), cropped to the `width` x `height` rectangle at
 * (`x0`, `y0`). Only the crop's top band is read, so `luma` may hold just those rows.
 * Returns {captureMs, source} or null (no timecode, unreadable, CRC mismatch).
 */
export function readTimecode(luma, stride, x0, y0, width, height) {
  if (width < COLUMNS * 2 || height < 16 * ROWS) return null;
  const cellH = (TIMECODE_BAND * height) / ROWS;
  const cellW = width / COLUMNS;
  const values = new Array(ROWS * COLUMNS);
  for (let r = 0; r < ROWS; r++) {
    for (let c = 0; c < COLUMNS; c++) {
      let sum = 0;
      for (const dy of SAMPLE_OFFSETS) {
        let py = Math.trunc((r + 0.5 + dy) * cellH);
        py = Math.min(Math.max(py, 0), height - 1);
        for (const dx of SAMPLE_OFFSETS) {
          let px = Math.trunc((c + 0.5 + dx) * cellW);
          px = Math.min(Math.max(px, 0), width - 1);
          sum += luma[(y0 + py) * stride + x0 + px];
        }
      }
      values[r * COLUMNS + c] = f32(sum / 9);
    }
  }
  const at = (r, c) => values[r * COLUMNS + (c < 0 ? COLUMNS + c : c)];
  const white = f32(f32(at(0, 0) + at(1, -1)) / 2);
  const black = f32(f32(at(0, -1) + at(1, 0)) / 2);
  const contrast = f32(white - black);
  if (!(contrast >= MIN_CONTRAST)) return null;
  const mid = f32(f32(white + black) / 2);
  const minMargin = f32(MIN_MARGIN * contrast);
  const bytes = new Uint8Array(8);
  let bit = 0;
  for (let r = 0; r < ROWS; r++) {
    for (let c = 1; c < COLUMNS - 1; c++, bit++) {
      const d = f32(at(r, c) - mid);
      if (Math.abs(d) < minMargin) return null;
      if (d > 0) bytes[bit >> 3] |= 0x80 >> (bit & 7);
    }
  }
  if (crc8(bytes.subarray(0, 7)) !== bytes[7]) return null;
  let captureMs = 0;
  for (let i = 0; i < 6; i++) captureMs = captureMs * 256 + bytes[i];
  return { captureMs, source: bytes[6] };
}

/**
 * Luma (video range, BT.601: what the H.264 stream carried for grey pixels) of RGBA
 * canvas pixels, as a Uint8Array with one value per pixel.
 */
export function lumaOfRgba(rgba) {
  const n = rgba.length >> 2;
  const out = new Uint8Array(n);
  for (let i = 0, j = 0; i < n; i++, j += 4) {
    out[i] = 16 + (65.481 * rgba[j] + 128.553 * rgba[j + 1] + 24.966 * rgba[j + 2]) / 255 + 0.5;
  }
  return out;
}
