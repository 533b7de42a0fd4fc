//! A small PNG encoder (8-bit RGB, no filtering, zlib with stored deflate blocks) and the
//! deterministic pictures the simulator "generates".
//!
//! Stored blocks keep the encoder tiny and the output byte-for-byte reproducible, which is
//! what tests need: they recompute the expected file from the prompt and compare.

use sha2::{Digest, Sha256};

const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];
/// Largest payload of one stored deflate block.
const STORED_BLOCK: usize = 65_535;

/// Side of a preview frame, in pixels.
pub const PREVIEW_SIDE: u32 = 32;
/// Side of a final image, in pixels (about 49 KB as a stored PNG).
pub const FINAL_SIDE: u32 = 128;

/// Encodes `pixels` (row-major RGB, `width * height * 3` bytes) as a PNG file.
pub fn encode_rgb(width: u32, height: u32, pixels: &[u8]) -> Vec<u8> {
    let row = width as usize * 3;
    assert_eq!(pixels.len(), row * height as usize, "pixel buffer size");
    let mut raw = Vec::with_capacity((row + 1) * height as usize);
    for line in pixels.chunks(row) {
        raw.push(0); // filter type "None"
        raw.extend_from_slice(line);
    }
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // depth 8, RGB, deflate, no filter, no interlace
    let mut out = SIGNATURE.to_vec();
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &zlib_stored(&raw));
    chunk(&mut out, b"IEND", &[]);
    out
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// A zlib stream of stored (uncompressed) deflate blocks.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    let mut blocks = data.chunks(STORED_BLOCK).peekable();
    if blocks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(block) = blocks.next() {
        out.push(u8::from(blocks.peek().is_none()));
        let len = block.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    out.extend_from_slice(&adler32(data).to_be_bytes());
    out
}

/// CRC-32 (IEEE, reflected), as PNG chunks use it.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xedb8_8320 & mask);
        }
    }
    !crc
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5552) {
        for &byte in chunk {
            a += u32::from(byte);
            b += a;
        }
        a %= 65_521;
        b %= 65_521;
    }
    (b << 16) | a
}

/// A square picture whose colours follow from `seed`: a gradient with a seeded pattern.
pub fn picture(seed: &[u8], side: u32) -> Vec<u8> {
    let digest = Sha256::digest(seed);
    let mut pixels = Vec::with_capacity((side * side * 3) as usize);
    for y in 0..side {
        for x in 0..side {
            let cell = ((x / 8) ^ (y / 8)) as usize % 8;
            let d = &digest[cell * 4..cell * 4 + 3];
            let fx = (x * 255 / side.max(1)) as u8;
            let fy = (y * 255 / side.max(1)) as u8;
            pixels.push(d[0].wrapping_add(fx));
            pixels.push(d[1].wrapping_add(fy));
            pixels.push(d[2] ^ fx ^ fy);
        }
    }
    encode_rgb(side, side, &pixels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_reference_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b"IEND"), 0xae42_6082);
    }

    #[test]
    fn adler_matches_the_reference_value() {
        assert_eq!(adler32(b"Wikipedia"), 0x11e6_0398);
    }

    #[test]
    fn pictures_are_valid_deterministic_pngs() {
        let a = picture(b"seed", FINAL_SIDE);
        assert_eq!(a, picture(b"seed", FINAL_SIDE));
        assert_ne!(a, picture(b"other", FINAL_SIDE));
        assert!(a.starts_with(&SIGNATURE));
        assert!(a.ends_with(&[0xae, 0x42, 0x60, 0x82]));
        // Width and height in IHDR.
        assert_eq!(&a[16..24], &[0, 0, 0, 128, 0, 0, 0, 128]);
        assert!(a.len() > 128 * 128 * 3);
        // A multi-block IDAT: the stored-block headers add up.
        let small = picture(b"seed", PREVIEW_SIDE);
        assert!(small.len() < a.len());
    }
}
