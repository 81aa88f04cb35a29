//! Size bounds of everything that crosses the wire.
//!
//! A decoder checks these before it trusts a length; an encoder asserts them
//! so that a node never emits what its peers would refuse.

/// Largest frame a peer may send, in bytes. Large enough for a maximal
/// envelope with room to spare, small enough that a hostile peer cannot make
/// a reader buffer much.
pub const FRAME_BYTES_MAX: usize = 256 * 1024;

/// Largest payload an envelope may carry. Bulk transfers (snapshots) are split
/// into chunks of at most this size.
pub const PAYLOAD_BYTES_MAX: usize = 128 * 1024;

/// Longest node or agent name, in bytes of UTF-8.
pub const NAME_BYTES_MAX: usize = 64;

/// Most nodes one cluster may have: paths name nodes by a `u16` wire
/// index, and a committed overlay lists at most this many down.
pub const NODES_MAX: usize = 10_000;
const _: () = assert!(NODES_MAX <= u16::MAX as usize + 1);

/// Most planned agents a committed directory may place: the directory
/// travels from node to node in one control frame with the overlay.
pub const PLACED_AGENTS_MAX: usize = 20_000;

/// Most hops an envelope may be allowed to travel: enough for any shape
/// with a diameter up to 64 (a ring of 128 nodes), at 2 bytes a hop.
pub const TTL_MAX: u8 = 64;

/// Most nodes an envelope's path may name: the origin plus one per hop.
pub const PATH_NODES_MAX: usize = TTL_MAX as usize + 1;

/// The envelope format this build speaks.
pub const ENVELOPE_VERSION: u8 = 3;

/// Bytes of framing and fixed fields around the payload, generously counted:
/// three names, a destination tag, varint integers and the authenticator.
pub const ENVELOPE_OVERHEAD_BYTES_MAX: usize =
    3 * (NAME_BYTES_MAX + 10) + 64 + 64 + 3 * PATH_NODES_MAX + 8;

const _: () = assert!(PAYLOAD_BYTES_MAX + ENVELOPE_OVERHEAD_BYTES_MAX <= FRAME_BYTES_MAX);
const _: () = assert!(TTL_MAX >= 1);
