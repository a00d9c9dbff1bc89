/*
 * bcryptprimitives.dll for wine 8 (Debian 12), which lacks it: Rust's standard library and the
 * getrandom crate get random bytes on Windows from its ProcessPrng export, so without it no Rust
 * program starts. This stand-in fills the buffer from bcrypt.dll's system RNG, which wine has.
 * Test environment only (scripts/windows-test.sh); Windows 10 and later ship the real DLL.
 */
#include <windows.h>
#include <bcrypt.h>

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (BCryptGenRandom(NULL, data, chunk, BCRYPT_USE_SYSTEM_PREFERRED_RNG) != 0)
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
