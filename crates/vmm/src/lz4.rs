//! Decoder for the legacy LZ4 frame the x86 kernel build uses for its compressed payload.
//! Only what the kernel emits: magic 0x184C2102, then blocks (u32 LE size + LZ4 block) until EOF
//! or a size that reads as a new magic.

use anyhow::{bail, Result};

/// Bytes of the legacy frame magic as they appear in the file.
pub const LEGACY_MAGIC: [u8; 4] = [0x02, 0x21, 0x4c, 0x18];
/// The kernel compresses in blocks of at most 8 MiB of output.
const LEGACY_BLOCK_MAX: usize = 8 << 20;

/// Decode a legacy-frame stream starting at its magic; trailing bytes after the last block
/// (the kernel appends the uncompressed size) are ignored.
pub fn decompress_legacy(data: &[u8]) -> Result<Vec<u8>> {
    if !data.starts_with(&LEGACY_MAGIC) {
        bail!("not an lz4 legacy stream (bad magic)");
    }
    let mut pos = 4;
    let mut out = Vec::with_capacity(data.len() * 3);
    while pos + 4 <= data.len() {
        let size = u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
        if size == u32::from_le_bytes(LEGACY_MAGIC) as usize {
            pos += 4;
            continue;
        }
        if size == 0 || pos + 4 + size > data.len() {
            break; // trailer (uncompressed length) or end of stream
        }
        let before = out.len();
        decompress_block(&data[pos + 4..pos + 4 + size], &mut out)?;
        if out.len() - before > LEGACY_BLOCK_MAX {
            bail!("lz4 block decodes to more than 8 MiB");
        }
        pos += 4 + size;
    }
    if out.is_empty() {
        bail!("lz4 stream has no blocks");
    }
    Ok(out)
}

/// Decode one raw LZ4 block, appending to `out` (matches may reach back into earlier blocks,
/// which the legacy format allows).
fn decompress_block(src: &[u8], out: &mut Vec<u8>) -> Result<()> {
    let mut i = 0;
    let read_len = |i: &mut usize, mut len: usize| -> Result<usize> {
        if len == 15 {
            loop {
                let Some(&b) = src.get(*i) else {
                    bail!("lz4: truncated length")
                };
                *i += 1;
                len += b as usize;
                if b != 255 {
                    break;
                }
            }
        }
        Ok(len)
    };
    while i < src.len() {
        let token = src[i];
        i += 1;
        let lit = read_len(&mut i, (token >> 4) as usize)?;
        let Some(literals) = src.get(i..i + lit) else {
            bail!("lz4: truncated literals")
        };
        out.extend_from_slice(literals);
        i += lit;
        if i == src.len() {
            break; // last sequence has literals only
        }
        let Some(off) = src.get(i..i + 2) else {
            bail!("lz4: truncated offset")
        };
        let offset = u16::from_le_bytes([off[0], off[1]]) as usize;
        i += 2;
        let mlen = read_len(&mut i, (token & 15) as usize)? + 4;
        if offset == 0 || offset > out.len() {
            bail!("lz4: bad match offset {offset}");
        }
        let start = out.len() - offset;
        if offset >= mlen {
            out.extend_from_within(start..start + mlen);
        } else {
            for k in 0..mlen {
                out.push(out[start + k]);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_literals_and_overlapping_match() {
        // "abc" literal, then match offset 3 len 9 => "abcabcabcabc", then literal "xyz"
        let block = [0x35, b'a', b'b', b'c', 3, 0, 0x30, b'x', b'y', b'z'];
        let mut stream = LEGACY_MAGIC.to_vec();
        stream.extend_from_slice(&(block.len() as u32).to_le_bytes());
        stream.extend_from_slice(&block);
        stream.extend_from_slice(&15u32.to_le_bytes());
        assert_eq!(decompress_legacy(&stream).unwrap(), b"abcabcabcabcxyz");
    }

    #[test]
    fn rejects_bad_offset() {
        let mut out = Vec::new();
        assert!(decompress_block(&[0x10, b'a', 9, 0], &mut out).is_err());
    }
}
