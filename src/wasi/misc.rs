//! Clocks, randomness, process arguments and exit.
//!
//! A WATM gets no arguments and no environment: everything it may know
//! arrives through `/conf/watm.cfg`. Randomness comes from the OS.

use super::poll::{CLOCK_MONOTONIC, CLOCK_PROCESS_CPUTIME, CLOCK_REALTIME, CLOCK_THREAD_CPUTIME};
use super::{with_ctx, Errno, HostTrap, WasiView};
use std::time::{SystemTime, UNIX_EPOCH};
use wasmtime::{Caller, Linker};

const P1: &str = super::PREVIEW1;

pub(super) fn add_to_linker<T: WasiView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.func_wrap(
        P1,
        "clock_time_get",
        |mut c: Caller<'_, T>, id: i32, _precision: i64, out: i32| {
            with_ctx(&mut c, |m, ctx| {
                let nanos = match id as u32 {
                    CLOCK_REALTIME => SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_nanos(),
                    CLOCK_MONOTONIC | CLOCK_PROCESS_CPUTIME | CLOCK_THREAD_CPUTIME => {
                        ctx.clock_base.elapsed().as_nanos()
                    }
                    _ => return Err(Errno::INVAL.into()),
                };
                Ok(m.write_u64(out as u32, u64::try_from(nanos).unwrap_or(u64::MAX))?)
            })
        },
    )?;
    linker.func_wrap(
        P1,
        "clock_res_get",
        |mut c: Caller<'_, T>, id: i32, out: i32| {
            with_ctx(&mut c, |m, _| match id as u32 {
                CLOCK_REALTIME | CLOCK_MONOTONIC | CLOCK_PROCESS_CPUTIME | CLOCK_THREAD_CPUTIME => {
                    Ok(m.write_u64(out as u32, 1)?)
                }
                _ => Err(Errno::INVAL.into()),
            })
        },
    )?;
    linker.func_wrap(
        P1,
        "random_get",
        |mut c: Caller<'_, T>, buf: i32, len: i32| {
            with_ctx(&mut c, |m, _| {
                let dest = m.slice_mut(buf as u32, len as u32)?;
                getrandom::fill(dest).map_err(|_| Errno::IO)?;
                Ok(())
            })
        },
    )?;
    for (sizes, get) in [
        ("args_sizes_get", "args_get"),
        ("environ_sizes_get", "environ_get"),
    ] {
        linker.func_wrap(
            P1,
            sizes,
            |mut c: Caller<'_, T>, count: i32, buf_size: i32| {
                with_ctx(&mut c, |m, _| {
                    m.write_u32(count as u32, 0)?;
                    Ok(m.write_u32(buf_size as u32, 0)?)
                })
            },
        )?;
        linker.func_wrap(P1, get, |mut c: Caller<'_, T>, _ptrs: i32, _buf: i32| {
            with_ctx(&mut c, |_, _| Ok(()))
        })?;
    }
    linker.func_wrap(P1, "sched_yield", |mut c: Caller<'_, T>| {
        with_ctx(&mut c, |_, _| {
            std::thread::yield_now();
            Ok(())
        })
    })?;
    linker.func_wrap(
        P1,
        "proc_exit",
        |_c: Caller<'_, T>, code: i32| -> wasmtime::Result<()> {
            Err(wasmtime::Error::new(HostTrap::Exit(code)))
        },
    )?;
    Ok(())
}
