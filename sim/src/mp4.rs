//! A small, real MP4 built in code: `ftyp`, `moov` (one H.264 video track) and `mdat`.
//!
//! The video is H.264 Baseline made only of `I_PCM` macroblocks (raw samples, no transform),
//! so it needs no encoder yet decodes in ordinary players. Its picture follows from a seed
//! (the prompt), one frame per second, so a test can rebuild the exact bytes it expects.

use sha2::{Digest, Sha256};

/// Side of the standard video, in pixels (a multiple of 16).
pub const SD_SIDE: u32 = 32;
/// Side of the upscaled ("HD") video.
pub const HD_SIDE: u32 = 64;
/// Media time units per second.
const TIMESCALE: u32 = 1000;

/// The MP4 the simulator produces for `seed` lasting `seconds` (1 frame per second; at least
/// one frame), `side` pixels square.
pub fn video(seed: &[u8], seconds: u32, side: u32) -> Vec<u8> {
    let side = side.max(16) / 16 * 16;
    let frames = seconds.clamp(1, 60);
    let sps = nal(0x67, &sps_rbsp(side));
    let pps = nal(0x68, &pps_rbsp());
    let digest = Sha256::digest(seed);
    let samples: Vec<Vec<u8>> = (0..frames)
        .map(|i| {
            let slice = nal(0x65, &idr_slice_rbsp(&digest, i, side));
            let mut sample = (slice.len() as u32).to_be_bytes().to_vec();
            sample.extend_from_slice(&slice);
            sample
        })
        .collect();
    let sizes: Vec<u32> = samples.iter().map(|s| s.len() as u32).collect();
    let ftyp = ftyp();
    // The chunk offset is a fixed-width field, so the moov size does not depend on it.
    let probe = moov(side, frames, &sps, &pps, &sizes, 0);
    let data_offset = (ftyp.len() + probe.len() + 8) as u32;
    let moov = moov(side, frames, &sps, &pps, &sizes, data_offset);
    let mut mdat_body = Vec::with_capacity(sizes.iter().sum::<u32>() as usize);
    for s in &samples {
        mdat_body.extend_from_slice(s);
    }
    let mut out = ftyp;
    out.extend_from_slice(&moov);
    out.extend_from_slice(&boxed(b"mdat", &mdat_body));
    out
}

fn boxed(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(kind);
    out.extend_from_slice(body);
    out
}

fn full_box(kind: &[u8; 4], version: u8, flags: u32, body: &[u8]) -> Vec<u8> {
    let mut b = vec![version];
    b.extend_from_slice(&flags.to_be_bytes()[1..]);
    b.extend_from_slice(body);
    boxed(kind, &b)
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

fn ftyp() -> Vec<u8> {
    boxed(b"ftyp", b"isom\x00\x00\x02\x00isomiso2avc1mp41")
}

/// The unity transformation matrix of `mvhd` and `tkhd`.
fn matrix() -> Vec<u8> {
    [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect()
}

fn moov(side: u32, frames: u32, sps: &[u8], pps: &[u8], sizes: &[u32], offset: u32) -> Vec<u8> {
    let duration = frames * TIMESCALE;
    let mut mvhd = Vec::new();
    mvhd.extend_from_slice(&[0; 8]); // creation and modification time
    mvhd.extend_from_slice(&TIMESCALE.to_be_bytes());
    mvhd.extend_from_slice(&duration.to_be_bytes());
    mvhd.extend_from_slice(&0x0001_0000u32.to_be_bytes()); // rate 1.0
    mvhd.extend_from_slice(&0x0100u16.to_be_bytes()); // volume 1.0
    mvhd.extend_from_slice(&[0; 10]);
    mvhd.extend_from_slice(&matrix());
    mvhd.extend_from_slice(&[0; 24]);
    mvhd.extend_from_slice(&2u32.to_be_bytes()); // next track id
    boxed(
        b"moov",
        &cat(&[
            full_box(b"mvhd", 0, 0, &mvhd),
            trak(side, frames, sps, pps, sizes, offset),
        ]),
    )
}

fn trak(side: u32, frames: u32, sps: &[u8], pps: &[u8], sizes: &[u32], offset: u32) -> Vec<u8> {
    let duration = frames * TIMESCALE;
    let mut tkhd = Vec::new();
    tkhd.extend_from_slice(&[0; 8]);
    tkhd.extend_from_slice(&1u32.to_be_bytes()); // track id
    tkhd.extend_from_slice(&[0; 4]);
    tkhd.extend_from_slice(&duration.to_be_bytes());
    tkhd.extend_from_slice(&[0; 8]);
    tkhd.extend_from_slice(&[0; 8]); // layer, alternate group, volume, reserved
    tkhd.extend_from_slice(&matrix());
    tkhd.extend_from_slice(&(side << 16).to_be_bytes());
    tkhd.extend_from_slice(&(side << 16).to_be_bytes());
    let mut mdhd = Vec::new();
    mdhd.extend_from_slice(&[0; 8]);
    mdhd.extend_from_slice(&TIMESCALE.to_be_bytes());
    mdhd.extend_from_slice(&duration.to_be_bytes());
    mdhd.extend_from_slice(&0x55c4u16.to_be_bytes()); // language "und"
    mdhd.extend_from_slice(&[0; 2]);
    let mut hdlr = vec![0; 4];
    hdlr.extend_from_slice(b"vide");
    hdlr.extend_from_slice(&[0; 12]);
    hdlr.extend_from_slice(b"VideoHandler\0");
    let dref = full_box(
        b"dref",
        0,
        0,
        &cat(&[1u32.to_be_bytes().to_vec(), full_box(b"url ", 0, 1, &[])]),
    );
    let minf = boxed(
        b"minf",
        &cat(&[
            full_box(b"vmhd", 0, 1, &[0; 8]),
            boxed(b"dinf", &dref),
            stbl(side, frames, sps, pps, sizes, offset),
        ]),
    );
    let mdia = boxed(
        b"mdia",
        &cat(&[
            full_box(b"mdhd", 0, 0, &mdhd),
            full_box(b"hdlr", 0, 0, &hdlr),
            minf,
        ]),
    );
    boxed(b"trak", &cat(&[full_box(b"tkhd", 0, 3, &tkhd), mdia]))
}

fn stbl(side: u32, frames: u32, sps: &[u8], pps: &[u8], sizes: &[u32], offset: u32) -> Vec<u8> {
    let mut avcc = vec![1, 66, 0, 30, 0xff, 0xe1];
    avcc.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    avcc.extend_from_slice(sps);
    avcc.push(1);
    avcc.extend_from_slice(&(pps.len() as u16).to_be_bytes());
    avcc.extend_from_slice(pps);
    let mut avc1 = vec![0; 6];
    avc1.extend_from_slice(&1u16.to_be_bytes()); // data reference index
    avc1.extend_from_slice(&[0; 16]);
    avc1.extend_from_slice(&(side as u16).to_be_bytes());
    avc1.extend_from_slice(&(side as u16).to_be_bytes());
    avc1.extend_from_slice(&0x0048_0000u32.to_be_bytes()); // 72 dpi
    avc1.extend_from_slice(&0x0048_0000u32.to_be_bytes());
    avc1.extend_from_slice(&[0; 4]);
    avc1.extend_from_slice(&1u16.to_be_bytes()); // frames per sample
    avc1.extend_from_slice(&[0; 32]); // compressor name
    avc1.extend_from_slice(&0x0018u16.to_be_bytes()); // depth
    avc1.extend_from_slice(&0xffffu16.to_be_bytes());
    avc1.extend_from_slice(&boxed(b"avcC", &avcc));
    let stsd = full_box(
        b"stsd",
        0,
        0,
        &cat(&[1u32.to_be_bytes().to_vec(), boxed(b"avc1", &avc1)]),
    );
    let words =
        |values: &[u32]| -> Vec<u8> { values.iter().flat_map(|v| v.to_be_bytes()).collect() };
    let stts = full_box(b"stts", 0, 0, &words(&[1, frames, TIMESCALE]));
    let stsc = full_box(b"stsc", 0, 0, &words(&[1, 1, frames, 1]));
    let mut stsz = words(&[0, frames]);
    stsz.extend_from_slice(&words(sizes));
    let stco = full_box(b"stco", 0, 0, &words(&[1, offset]));
    boxed(
        b"stbl",
        &cat(&[stsd, stts, stsc, full_box(b"stsz", 0, 0, &stsz), stco]),
    )
}

/// Writes H.264 syntax elements bit by bit.
#[derive(Default)]
struct Bits {
    bytes: Vec<u8>,
    bit: u8,
}

impl Bits {
    fn u(&mut self, width: u32, value: u32) {
        for i in (0..width).rev() {
            if self.bit == 0 {
                self.bytes.push(0);
            }
            if (value >> i) & 1 == 1 {
                *self.bytes.last_mut().expect("a byte was pushed") |= 0x80 >> self.bit;
            }
            self.bit = (self.bit + 1) % 8;
        }
    }

    /// Unsigned Exp-Golomb.
    fn ue(&mut self, value: u32) {
        let v = value + 1;
        let len = 32 - v.leading_zeros();
        self.u(len - 1, 0);
        self.u(len, v);
    }

    /// Signed Exp-Golomb (only zero is needed here).
    fn se_zero(&mut self) {
        self.ue(0);
    }

    fn align_zero(&mut self) {
        while self.bit != 0 {
            self.u(1, 0);
        }
    }

    fn trailing(mut self) -> Vec<u8> {
        self.u(1, 1);
        self.align_zero();
        self.bytes
    }
}

fn sps_rbsp(side: u32) -> Vec<u8> {
    let mut b = Bits::default();
    b.u(8, 66); // Baseline
    b.u(8, 0); // constraint flags
    b.u(8, 30); // level 3.0
    b.ue(0); // seq_parameter_set_id
    b.ue(0); // log2_max_frame_num_minus4
    b.ue(2); // pic_order_cnt_type: output order is decoding order
    b.ue(1); // max_num_ref_frames
    b.u(1, 0); // gaps_in_frame_num_value_allowed_flag
    b.ue(side / 16 - 1); // pic_width_in_mbs_minus1
    b.ue(side / 16 - 1); // pic_height_in_map_units_minus1
    b.u(1, 1); // frame_mbs_only_flag
    b.u(1, 1); // direct_8x8_inference_flag
    b.u(1, 0); // frame_cropping_flag
    b.u(1, 0); // vui_parameters_present_flag
    b.trailing()
}

fn pps_rbsp() -> Vec<u8> {
    let mut b = Bits::default();
    b.ue(0); // pic_parameter_set_id
    b.ue(0); // seq_parameter_set_id
    b.u(1, 0); // entropy_coding_mode_flag: CAVLC
    b.u(1, 0); // bottom_field_pic_order_in_frame_present_flag
    b.ue(0); // num_slice_groups_minus1
    b.ue(0); // num_ref_idx_l0_default_active_minus1
    b.ue(0); // num_ref_idx_l1_default_active_minus1
    b.u(1, 0); // weighted_pred_flag
    b.u(2, 0); // weighted_bipred_idc
    b.se_zero(); // pic_init_qp_minus26
    b.se_zero(); // pic_init_qs_minus26
    b.se_zero(); // chroma_qp_index_offset
    b.u(1, 1); // deblocking_filter_control_present_flag
    b.u(1, 0); // constrained_intra_pred_flag
    b.u(1, 0); // redundant_pic_cnt_present_flag
    b.trailing()
}

/// One IDR picture of `I_PCM` macroblocks; each macroblock a flat colour from the seed,
/// shifting from frame to frame.
fn idr_slice_rbsp(digest: &[u8], frame: u32, side: u32) -> Vec<u8> {
    let mut b = Bits::default();
    b.ue(0); // first_mb_in_slice
    b.ue(7); // slice_type: I (all slices)
    b.ue(0); // pic_parameter_set_id
    b.u(4, 0); // frame_num
    b.ue(frame % 2); // idr_pic_id: differs between consecutive IDR pictures
    b.u(1, 0); // no_output_of_prior_pics_flag
    b.u(1, 0); // long_term_reference_flag
    b.se_zero(); // slice_qp_delta
    b.ue(1); // disable_deblocking_filter_idc
    let mbs = (side / 16) * (side / 16);
    for mb in 0..mbs {
        b.ue(25); // mb_type I_PCM
        b.align_zero();
        let at = ((mb + frame) as usize * 3) % (digest.len() - 2);
        // Video range (16..=235) keeps zero bytes, and so start-code look-alikes, out.
        let sample = |v: u8| 16 + (u32::from(v) * 219 / 255) as u8;
        let (y, cb, cr) = (
            sample(digest[at]),
            sample(digest[at + 1]),
            sample(digest[at + 2]),
        );
        for i in 0..256u32 {
            // A gentle gradient inside the macroblock, so frames are not flat.
            b.u(8, u32::from(y.saturating_add((i % 16) as u8).min(235)));
        }
        for _ in 0..64 {
            b.u(8, u32::from(cb));
        }
        for _ in 0..64 {
            b.u(8, u32::from(cr));
        }
    }
    b.trailing()
}

/// A NAL unit: header byte, then the payload with emulation prevention bytes.
fn nal(header: u8, rbsp: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rbsp.len() + 8);
    out.push(header);
    let mut zeros = 0;
    for &byte in rbsp {
        if zeros >= 2 && byte <= 3 {
            out.push(3);
            zeros = 0;
        }
        out.push(byte);
        zeros = if byte == 0 { zeros + 1 } else { 0 };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Top-level boxes as (type, size).
    fn top_boxes(data: &[u8]) -> Vec<(String, usize)> {
        let mut at = 0;
        let mut out = Vec::new();
        while at + 8 <= data.len() {
            let size = u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
            out.push((
                String::from_utf8_lossy(&data[at + 4..at + 8]).into_owned(),
                size,
            ));
            assert!(size >= 8);
            at += size;
        }
        assert_eq!(at, data.len(), "boxes cover the file exactly");
        out
    }

    #[test]
    fn is_a_well_formed_mp4_deterministic_per_seed() {
        let a = video(b"a cat", 3, SD_SIDE);
        assert_eq!(&a[4..8], b"ftyp");
        let kinds: Vec<String> = top_boxes(&a).into_iter().map(|(k, _)| k).collect();
        assert_eq!(kinds, ["ftyp", "moov", "mdat"]);
        assert_eq!(a, video(b"a cat", 3, SD_SIDE));
        assert_ne!(a, video(b"a dog", 3, SD_SIDE));
        assert!(video(b"a cat", 6, SD_SIDE).len() > a.len());
        assert!(video(b"a cat", 3, HD_SIDE).len() > a.len());
    }

    #[test]
    fn chunk_offset_points_at_the_first_sample() {
        let v = video(b"x", 2, SD_SIDE);
        let stco = v.windows(4).position(|w| w == b"stco").unwrap();
        let offset = u32::from_be_bytes(v[stco + 12..stco + 16].try_into().unwrap()) as usize;
        let mdat = v.windows(4).rposition(|w| w == b"mdat").unwrap();
        assert_eq!(offset, mdat + 4);
        // The first sample is a length-prefixed IDR slice.
        assert_eq!(v[offset + 4], 0x65);
    }

    #[test]
    fn exp_golomb_and_emulation_prevention() {
        let mut b = Bits::default();
        b.ue(0); // 1
        b.ue(1); // 010
        b.ue(25); // 000011010
        assert_eq!(b.trailing(), vec![0b1010_0000, 0b1101_0100]);
        assert_eq!(
            nal(0x65, &[0, 0, 1, 0, 0, 0]),
            vec![0x65, 0, 0, 3, 1, 0, 0, 3, 0]
        );
    }
}
