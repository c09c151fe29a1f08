// The C ABI between the plugin shell (no Python at link time) and the bridge (built against one
// Python's headers, its Python symbols resolved at load time from the process). The shell loads
// the bridge with dlopen and looks these up with dlsym; bump DSB_ABI when a signature changes.
#pragma once

#define DSB_ABI 3

extern "C" {
// Errors come back as text in (err, errlen); calls that can fail return 0 on success.
typedef int (*dsb_abi_fn)();
typedef const char* (*dsb_python_version_fn)();  // the version the bridge was compiled against
// Start an interpreter in a host without Python: `program` is the environment's python, so
// sys.prefix and site-packages are that environment's. Never finalised.
typedef int (*dsb_start_fn)(const char* program, char* err, int errlen);
// Release the GIL if this thread holds it (returns a token, or null), and take it back.
typedef void* (*dsb_release_gil_fn)();
typedef void (*dsb_restore_gil_fn)(void* token);
// A worker thread's Python thread state for its lifetime (enter returns a token for exit).
typedef void* (*dsb_thread_enter_fn)();
typedef void (*dsb_thread_exit_fn)(void* token);
// dawsep.plugin_backend.create(config_json) -> a backend handle (a new reference), or null.
typedef void* (*dsb_create_fn)(const char* config_json, char* err, int errlen);
// backend.info(buffer_ms, or None when negative) as JSON text into (out, outlen).
typedef int (*dsb_info_fn)(void* backend, double buffer_ms, char* out, int outlen, char* err, int errlen);
// backend.process_into: n interleaved stereo frames in, n interleaved 4-row frames out;
// `position`: the first frame's sample on the host's timeline, or DSB_NO_POSITION when the host
// gave none (no play head, transport stopped); `at_or_before`: 1 when the frame may lie anywhere
// at or before `position` (the host said 0, which JUCE also reports for any negative time).
#define DSB_NO_POSITION (-9223372036854775807LL - 1)
typedef int (*dsb_process_fn)(void* backend, const float* in, float* out, int n, int preset,
                              int effects, long long position, int at_or_before, char* err, int errlen);
typedef int (*dsb_reset_fn)(void* backend, char* err, int errlen);
typedef void (*dsb_destroy_fn)(void* backend);
}
