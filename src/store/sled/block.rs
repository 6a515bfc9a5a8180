//! Whole, aligned blocks: the unit in which the write-ahead log (`wal.rs`) and its filler
//! (`prefill.rs`) write, as direct I/O needs aligned offsets, lengths and memory.

/// The unit of every write: the header, and each entry padded to whole blocks (direct I/O
/// needs aligned offsets, lengths and memory; 4 KiB covers every device's logical block).
pub const BLOCK: usize = 4096;

/// `len` rounded up to whole blocks.
pub fn padded(len: usize) -> usize {
    len.div_ceil(BLOCK) * BLOCK
}

/// A block-aligned slice of `buffer` (direct I/O wants the memory aligned too), `len` rounded
/// up to whole blocks long, all zeros.
pub fn padded_buffer(buffer: &mut Vec<u8>, len: usize) -> &mut [u8] {
    let size = padded(len);
    buffer.clear();
    buffer.resize(size + BLOCK, 0);
    let start = buffer.as_ptr().align_offset(BLOCK).min(BLOCK);
    &mut buffer[start..start + size]
}
