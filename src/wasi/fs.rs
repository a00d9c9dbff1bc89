//! The read-only `/conf` preopen holding `watm.cfg`.
//!
//! A WATM reads its transport configuration from `/conf/watm.cfg` during
//! `watm_init_v1`. The directory exists only when the runtime was given a
//! config; it holds exactly that one file, and nothing can be created,
//! written or reached outside it.

use super::io::{
    FILETYPE_CHARACTER_DEVICE, FILETYPE_DIRECTORY, FILETYPE_REGULAR_FILE, FILETYPE_SOCKET_STREAM,
    RIGHT_FD_WRITE,
};
use super::{with_ctx, Entry, Errno, GuestMemory, HostResult, IoVec, WasiCtx, WasiView};
use wasmtime::{Caller, Linker};

const P1: &str = super::PREVIEW1;

/// The guest-visible path of the preopened directory.
pub const CONF_DIR: &str = "/conf";
/// The one file inside it.
pub const CONF_FILE: &str = "watm.cfg";

const OFLAGS_CREAT: u16 = 1 << 0;
const OFLAGS_DIRECTORY: u16 = 1 << 1;
const OFLAGS_EXCL: u16 = 1 << 2;
const OFLAGS_TRUNC: u16 = 1 << 3;

const WHENCE_SET: u8 = 0;
const WHENCE_CUR: u8 = 1;
const WHENCE_END: u8 = 2;

/// Longest path a guest may pass.
const MAX_PATH: u32 = 4096;

pub(super) fn add_to_linker<T: WasiView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.func_wrap(
        P1,
        "fd_prestat_get",
        |mut c: Caller<'_, T>, fd: i32, out: i32| {
            with_ctx(&mut c, |m, ctx| match ctx.fds.get(fd)? {
                Entry::ConfDir => Ok(m.write(out as u32, &prestat_dir(CONF_DIR))?),
                // wasi-libc scans descriptors upwards until EBADF; anything
                // that is not a preopen ends the scan.
                _ => Err(Errno::BADF.into()),
            })
        },
    )?;
    linker.func_wrap(
        P1,
        "fd_prestat_dir_name",
        |mut c: Caller<'_, T>, fd: i32, path: i32, len: i32| {
            with_ctx(&mut c, |m, ctx| match ctx.fds.get(fd)? {
                Entry::ConfDir => {
                    let name = CONF_DIR.as_bytes();
                    if (len as u32 as usize) < name.len() {
                        return Err(Errno::NAMETOOLONG.into());
                    }
                    Ok(m.write(path as u32, name)?)
                }
                _ => Err(Errno::BADF.into()),
            })
        },
    )?;
    linker.func_wrap(
        P1,
        "path_open",
        |mut c: Caller<'_, T>,
         dirfd: i32,
         _dirflags: i32,
         path: i32,
         path_len: i32,
         oflags: i32,
         rights: i64,
         _inheriting: i64,
         _fdflags: i32,
         out: i32| {
            with_ctx(&mut c, |m, ctx| {
                let name = guest_path(m, ctx, dirfd, path as u32, path_len as u32)?;
                let oflags = oflags as u16;
                let entry = match name {
                    Target::Dir => Entry::ConfDir,
                    Target::ConfFile => {
                        if oflags & (OFLAGS_CREAT | OFLAGS_EXCL) == OFLAGS_CREAT | OFLAGS_EXCL {
                            return Err(Errno::EXIST.into());
                        }
                        if oflags & OFLAGS_DIRECTORY != 0 {
                            return Err(Errno::NOTDIR.into());
                        }
                        if oflags & OFLAGS_TRUNC != 0 || rights as u64 & RIGHT_FD_WRITE != 0 {
                            return Err(Errno::ROFS.into());
                        }
                        Entry::ConfFile { pos: 0 }
                    }
                    Target::Missing => {
                        return Err(if oflags & OFLAGS_CREAT != 0 {
                            Errno::ROFS
                        } else {
                            Errno::NOENT
                        }
                        .into())
                    }
                };
                let fd = ctx.fds.insert(entry)?;
                Ok(m.write_u32(out as u32, fd)?)
            })
        },
    )?;
    linker.func_wrap(
        P1,
        "fd_seek",
        |mut c: Caller<'_, T>, fd: i32, offset: i64, whence: i32, out: i32| {
            with_ctx(&mut c, |m, ctx| {
                let len = ctx.conf.as_ref().map_or(0, |c| c.len() as u64);
                let Entry::ConfFile { pos } = ctx.fds.get_mut(fd)? else {
                    return Err(Errno::SPIPE.into());
                };
                let base = match whence as u8 {
                    WHENCE_SET => 0,
                    WHENCE_CUR => *pos,
                    WHENCE_END => len,
                    _ => return Err(Errno::INVAL.into()),
                };
                let new = base.checked_add_signed(offset).ok_or(Errno::INVAL)?;
                *pos = new;
                Ok(m.write_u64(out as u32, new)?)
            })
        },
    )?;
    linker.func_wrap(P1, "fd_tell", |mut c: Caller<'_, T>, fd: i32, out: i32| {
        with_ctx(&mut c, |m, ctx| match ctx.fds.get(fd)? {
            Entry::ConfFile { pos } => Ok(m.write_u64(out as u32, *pos)?),
            _ => Err(Errno::SPIPE.into()),
        })
    })?;
    linker.func_wrap(
        P1,
        "fd_filestat_get",
        |mut c: Caller<'_, T>, fd: i32, out: i32| {
            with_ctx(&mut c, |m, ctx| {
                let conf_len = ctx.conf.as_ref().map_or(0, |c| c.len() as u64);
                let (filetype, size) = match ctx.fds.get(fd)? {
                    Entry::Stdin | Entry::Stdout | Entry::Stderr => (FILETYPE_CHARACTER_DEVICE, 0),
                    Entry::ConfDir => (FILETYPE_DIRECTORY, 0),
                    Entry::ConfFile { .. } => (FILETYPE_REGULAR_FILE, conf_len),
                    Entry::Socket(_) | Entry::Lazy(_) | Entry::Control { .. } => {
                        (FILETYPE_SOCKET_STREAM, 0)
                    }
                };
                write_filestat(m, out as u32, filetype, size)
            })
        },
    )?;
    linker.func_wrap(
        P1,
        "path_filestat_get",
        |mut c: Caller<'_, T>, dirfd: i32, _flags: i32, path: i32, len: i32, out: i32| {
            with_ctx(&mut c, |m, ctx| {
                let conf_len = ctx.conf.as_ref().map_or(0, |c| c.len() as u64);
                match guest_path(m, ctx, dirfd, path as u32, len as u32)? {
                    Target::Dir => write_filestat(m, out as u32, FILETYPE_DIRECTORY, 0),
                    Target::ConfFile => {
                        write_filestat(m, out as u32, FILETYPE_REGULAR_FILE, conf_len)
                    }
                    Target::Missing => Err(Errno::NOENT.into()),
                }
            })
        },
    )?;
    Ok(())
}

/// A preview1 `prestat` for a preopened directory: tag 0 (directory), then
/// the length of its name. Written as one block, so the bounds check covers
/// both fields and no address arithmetic can wrap.
fn prestat_dir(name: &str) -> [u8; 8] {
    let mut prestat = [0u8; 8];
    prestat[4..].copy_from_slice(&(name.len() as u32).to_le_bytes());
    prestat
}

/// What a guest path names inside `/conf`.
enum Target {
    Dir,
    ConfFile,
    Missing,
}

/// Resolves a path relative to a directory descriptor. Only `.`, `watm.cfg`
/// and `./watm.cfg` name anything; every other path, including any attempt
/// to climb out with `..`, is missing.
fn guest_path(
    m: &GuestMemory<'_>,
    ctx: &WasiCtx,
    dirfd: i32,
    ptr: u32,
    len: u32,
) -> HostResult<Target> {
    match ctx.fds.get(dirfd)? {
        Entry::ConfDir => {}
        _ => return Err(Errno::NOTDIR.into()),
    }
    if len > MAX_PATH {
        return Err(Errno::NAMETOOLONG.into());
    }
    let raw = m.slice(ptr, len)?;
    let path = std::str::from_utf8(raw).map_err(|_| Errno::ILSEQ)?;
    let path = path.trim_start_matches("./");
    Ok(match path {
        "" | "." => Target::Dir,
        CONF_FILE => Target::ConfFile,
        _ => Target::Missing,
    })
}

fn write_filestat(m: &mut GuestMemory<'_>, out: u32, filetype: u8, size: u64) -> HostResult {
    // filestat: dev, ino, filetype (u8 at 16), nlink, size, atim, mtim, ctim.
    let mut stat = [0u8; 64];
    stat[16] = filetype;
    stat[24..32].copy_from_slice(&1u64.to_le_bytes());
    stat[32..40].copy_from_slice(&size.to_le_bytes());
    Ok(m.write(out, &stat)?)
}

/// `fd_read` on the config file: copies from the current offset into the
/// guest's buffers in order.
pub(super) fn read_conf(
    m: &mut GuestMemory<'_>,
    ctx: &mut WasiCtx,
    fd: i32,
    iovecs: &[IoVec],
) -> HostResult<u32> {
    let conf = ctx
        .conf
        .clone()
        .unwrap_or_else(|| std::sync::Arc::from(&[][..]));
    let Entry::ConfFile { pos } = ctx.fds.get_mut(fd)? else {
        return Err(Errno::BADF.into());
    };
    let mut total = 0u32;
    for iov in iovecs {
        let start = usize::try_from(*pos).unwrap_or(usize::MAX).min(conf.len());
        let remaining = &conf[start..];
        if remaining.is_empty() {
            break;
        }
        let n = remaining.len().min(iov.len as usize);
        m.write(iov.ptr, &remaining[..n])?;
        *pos += n as u64;
        total += n as u32;
    }
    Ok(total)
}
