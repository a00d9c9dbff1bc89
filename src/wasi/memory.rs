//! Bounds-checked access to a guest's linear memory.
//!
//! Every pointer and length a module passes to a host call is untrusted. All
//! reads and writes go through [`GuestMemory`], which turns an out-of-range
//! or overflowing access into `EFAULT` instead of a host panic. The guest
//! memory is an ordinary `&mut [u8]` borrowed from wasmtime, so no `unsafe`
//! is needed.

use super::errno::Errno;

/// One guest's linear memory, borrowed for the duration of a host call.
pub struct GuestMemory<'a> {
    bytes: &'a mut [u8],
}

/// A WASI `ciovec`/`iovec` as read from guest memory: (pointer, length).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct IoVec {
    pub ptr: u32,
    pub len: u32,
}

/// Upper bound on the number of entries of an iovec array, like `IOV_MAX`.
pub const MAX_IOVS: u32 = 1024;

impl<'a> GuestMemory<'a> {
    pub fn new(bytes: &'a mut [u8]) -> Self {
        Self { bytes }
    }

    fn range(&self, ptr: u32, len: u32) -> Result<std::ops::Range<usize>, Errno> {
        let start = ptr as usize;
        let end = start.checked_add(len as usize).ok_or(Errno::FAULT)?;
        if end > self.bytes.len() {
            return Err(Errno::FAULT);
        }
        Ok(start..end)
    }

    /// The guest bytes `ptr..ptr+len`.
    pub fn slice(&self, ptr: u32, len: u32) -> Result<&[u8], Errno> {
        let r = self.range(ptr, len)?;
        Ok(&self.bytes[r])
    }

    /// The guest bytes `ptr..ptr+len`, writable.
    pub fn slice_mut(&mut self, ptr: u32, len: u32) -> Result<&mut [u8], Errno> {
        let r = self.range(ptr, len)?;
        Ok(&mut self.bytes[r])
    }

    fn array<const N: usize>(&self, ptr: u32) -> Result<[u8; N], Errno> {
        let s = self.slice(ptr, N as u32)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    pub fn read_u8(&self, ptr: u32) -> Result<u8, Errno> {
        Ok(self.array::<1>(ptr)?[0])
    }

    pub fn read_u16(&self, ptr: u32) -> Result<u16, Errno> {
        Ok(u16::from_le_bytes(self.array(ptr)?))
    }

    pub fn read_u32(&self, ptr: u32) -> Result<u32, Errno> {
        Ok(u32::from_le_bytes(self.array(ptr)?))
    }

    pub fn read_u64(&self, ptr: u32) -> Result<u64, Errno> {
        Ok(u64::from_le_bytes(self.array(ptr)?))
    }

    pub fn write(&mut self, ptr: u32, data: &[u8]) -> Result<(), Errno> {
        let len = u32::try_from(data.len()).map_err(|_| Errno::FAULT)?;
        self.slice_mut(ptr, len)?.copy_from_slice(data);
        Ok(())
    }

    pub fn write_u8(&mut self, ptr: u32, v: u8) -> Result<(), Errno> {
        self.write(ptr, &[v])
    }

    pub fn write_u16(&mut self, ptr: u32, v: u16) -> Result<(), Errno> {
        self.write(ptr, &v.to_le_bytes())
    }

    pub fn write_u32(&mut self, ptr: u32, v: u32) -> Result<(), Errno> {
        self.write(ptr, &v.to_le_bytes())
    }

    pub fn write_u64(&mut self, ptr: u32, v: u64) -> Result<(), Errno> {
        self.write(ptr, &v.to_le_bytes())
    }

    /// Reads an array of `count` iovecs (8 bytes each) starting at `ptr`, and
    /// checks that every buffer it names lies inside guest memory.
    pub fn iovecs(&self, ptr: u32, count: u32) -> Result<Vec<IoVec>, Errno> {
        if count > MAX_IOVS {
            return Err(Errno::INVAL);
        }
        let table = self.slice(ptr, count.checked_mul(8).ok_or(Errno::FAULT)?)?;
        let mut out = Vec::with_capacity(count as usize);
        for entry in table.chunks_exact(8) {
            let iov = IoVec {
                ptr: u32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]),
                len: u32::from_le_bytes([entry[4], entry[5], entry[6], entry[7]]),
            };
            self.range(iov.ptr, iov.len)?;
            out.push(iov);
        }
        Ok(out)
    }

    /// Concatenates the bytes named by an iovec array, refusing more than
    /// `limit` bytes in total (used for short strings such as addresses).
    pub fn gather(&self, ptr: u32, count: u32, limit: usize) -> Result<Vec<u8>, Errno> {
        let mut out = Vec::new();
        for iov in self.iovecs(ptr, count)? {
            if out.len() + iov.len as usize > limit {
                return Err(Errno::NAMETOOLONG);
            }
            out.extend_from_slice(self.slice(iov.ptr, iov.len)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_access_is_efault() {
        let mut buf = vec![0u8; 16];
        let mut m = GuestMemory::new(&mut buf);
        assert_eq!(m.slice(10, 6).map(|s| s.len()), Ok(6));
        assert_eq!(m.slice(10, 7), Err(Errno::FAULT));
        assert_eq!(m.slice(u32::MAX, 2), Err(Errno::FAULT));
        assert_eq!(m.read_u32(13), Err(Errno::FAULT));
        assert_eq!(m.write_u64(9, 1), Err(Errno::FAULT));
        assert_eq!(m.write_u64(8, 0x0102_0304_0506_0708), Ok(()));
        assert_eq!(m.read_u64(8), Ok(0x0102_0304_0506_0708));
        assert_eq!(m.read_u8(8), Ok(8), "little endian");
    }

    #[test]
    fn iovec_arrays_are_checked_entry_by_entry() {
        let mut buf = vec![0u8; 64];
        // iovec 0: (32, 4) "abcd"; iovec 1: (40, 2) "ef"
        buf[0..8].copy_from_slice(&[32, 0, 0, 0, 4, 0, 0, 0]);
        buf[8..16].copy_from_slice(&[40, 0, 0, 0, 2, 0, 0, 0]);
        buf[32..36].copy_from_slice(b"abcd");
        buf[40..42].copy_from_slice(b"ef");
        let m = GuestMemory::new(&mut buf);
        assert_eq!(m.gather(0, 2, 100).unwrap(), b"abcdef");
        assert_eq!(m.gather(0, 2, 5), Err(Errno::NAMETOOLONG));
        assert_eq!(m.iovecs(0, MAX_IOVS + 1), Err(Errno::INVAL));
        // The array itself runs past the end.
        assert_eq!(m.iovecs(60, 1), Err(Errno::FAULT));
        assert_eq!(m.iovecs(u32::MAX - 3, 1), Err(Errno::FAULT));
    }

    #[test]
    fn iovec_pointing_outside_memory_is_efault() {
        let mut buf = vec![0u8; 32];
        buf[0..8].copy_from_slice(&[30, 0, 0, 0, 8, 0, 0, 0]);
        let m = GuestMemory::new(&mut buf);
        assert_eq!(m.iovecs(0, 1), Err(Errno::FAULT));
        // A huge count whose byte size overflows u32.
        assert!(m.iovecs(0, u32::MAX).is_err());
    }
}
