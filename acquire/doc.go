// Package acquire is impound's data path: it streams a volume from a source
// (an EBS snapshot through the EBS direct APIs, a block device, a file) into
// the vault once, hashing it as it passes, in bounded memory, and returns an
// [Evidence] record proving what was stored.
//
// # Guarantees
//
//   - Bit for bit: the stored image (decompressed, when compressed) equals
//     the source; its SHA-256 is what sha256sum of the source prints. Blocks
//     the source does not hold (unlisted EBS blocks, file holes) are zeros
//     and are not read.
//   - Hashed while streaming: the whole-image hashes (SHA-256 always; MD5,
//     SHA-1, SHA-512 on request) and the RFC 6962 Merkle root over the
//     512 KiB blocks are computed from the bytes on their way to the vault.
//     For a raw image, the vault's own SHA-256 of the stream must agree.
//   - Nothing wrong is recorded: [Run] returns an Evidence only when the
//     image and its block map are committed and every check passed. Every
//     EBS block's x-amz-Checksum is verified; a block that stays corrupt
//     fails the acquisition with [ErrCorrupt]. A failed acquisition aborts
//     its upload, leaving no object.
//   - Resumable: with a state directory, a run killed at any point continues
//     ([Options.Resume]) to the same hashes and one object.
//   - Incremental, still whole: an [IncrementalSource] reads from EBS only
//     the blocks ListChangedBlocks names and takes the others from an
//     earlier acquisition's stored image, which must hash, whole, to the
//     Merkle root recorded for it ([ErrBaseMismatch]); the image is the
//     newer snapshot's, bit for bit.
//   - Flat memory: at most [Options.Window] blocks are buffered ahead of the
//     sequential hash, plus one per reader, whatever the volume's size.
//
// See docs/acquire.md for the pipeline, the formats and the measurements.
package acquire
