// The bridge: the only code that sees Python's C API. Built against the headers of the Python it
// will run, but not linked to libpython: its Python symbols resolve at dlopen time against the
// process (the host's Python, or the libpython the shell loaded RTLD_GLOBAL). Every entry point
// takes the GIL itself, so the shell never needs to know about it.
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <cstdio>
#include <cstring>

#include "dawsep_bridge.h"

#define DSB_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

void copyText(char* dst, int len, const char* src) {
  if (dst == nullptr || len <= 0) return;
  std::snprintf(dst, (size_t)len, "%s", src ? src : "");
}

// dawsep's own errors (DawsepError) and a missing package say all there is to say in one line.
bool expected(PyObject* type) {
  if (PyErr_GivenExceptionMatches(type, PyExc_ImportError)) return true;
  PyObject* mod = PyDict_GetItemString(PyImport_GetModuleDict(), "dawsep.errors");  // borrowed
  PyObject* base = mod ? PyObject_GetAttrString(mod, "DawsepError") : nullptr;
  bool is = base != nullptr && PyErr_GivenExceptionMatches(type, base);
  Py_XDECREF(base);
  PyErr_Clear();
  return is;
}

// The pending Python exception as "Type: message" (and cleared); the traceback goes to stderr,
// where a host shows or logs it, because a status line cannot hold it.
void fetchError(char* err, int errlen) {
  PyObject *type, *value, *tb;
  PyErr_Fetch(&type, &value, &tb);
  PyErr_NormalizeException(&type, &value, &tb);
  const char* name = type ? ((PyTypeObject*)type)->tp_name : "error";
  PyObject* text = value ? PyObject_Str(value) : nullptr;
  const char* msg = text ? PyUnicode_AsUTF8(text) : nullptr;
  if (msg == nullptr) PyErr_Clear();
  char buf[4096];
  std::snprintf(buf, sizeof buf, "%s: %s", name, msg ? msg : "(no message)");
  copyText(err, errlen, buf);
  if (tb != nullptr && type != nullptr && !expected(type)) {
    PyErr_Restore(type, value, tb);  // PyErr_Print consumes them
    PyErr_Print();
    type = value = tb = nullptr;
  }
  Py_XDECREF(text);
  Py_XDECREF(type);
  Py_XDECREF(value);
  Py_XDECREF(tb);
}

// Past Py_Finalize's start (a Python host exiting with the plugin still loaded) the GIL may not
// be taken again: the last calls then leak instead of hanging or crashing the exit.
bool finalizing() {
#if PY_VERSION_HEX >= 0x030D0000
  return Py_IsFinalizing();
#else
  return _Py_IsFinalizing();
#endif
}

struct Gil {
  PyGILState_STATE state;
  Gil() : state(PyGILState_Ensure()) {}
  ~Gil() { PyGILState_Release(state); }
};

}  // namespace

DSB_EXPORT int dsb_abi() { return DSB_ABI; }

DSB_EXPORT const char* dsb_python_version() { return PY_VERSION; }

DSB_EXPORT int dsb_start(const char* program, char* err, int errlen) {
  if (Py_IsInitialized()) return 0;
  PyConfig config;
  PyConfig_InitPythonConfig(&config);
  config.install_signal_handlers = 0;  // the host owns SIGINT and friends
  config.parse_argv = 0;
  PyStatus st = PyConfig_SetBytesString(&config, &config.program_name, program);
  if (!PyStatus_Exception(st)) st = Py_InitializeFromConfig(&config);
  PyConfig_Clear(&config);
  if (PyStatus_Exception(st)) {
    char buf[1024];
    std::snprintf(buf, sizeof buf, "cannot start Python from %s: %s", program,
                  st.err_msg ? st.err_msg : "unknown error");
    copyText(err, errlen, buf);
    return 1;
  }
  // Give the GIL away for good: every later call takes it with PyGILState_Ensure.
  PyEval_SaveThread();
  return 0;
}

DSB_EXPORT void* dsb_release_gil() {
  if (!Py_IsInitialized() || finalizing() || !PyGILState_Check()) return nullptr;
  return PyEval_SaveThread();
}

DSB_EXPORT void dsb_restore_gil(void* token) {
  if (token != nullptr) PyEval_RestoreThread((PyThreadState*)token);
}

DSB_EXPORT void* dsb_thread_enter() {
  // One PyGILState_Ensure held for the thread's life keeps its thread state alive, so each
  // later call only swaps the GIL instead of creating and destroying a thread state.
  auto* state = new PyGILState_STATE(PyGILState_Ensure());
  PyEval_SaveThread();
  return state;
}

DSB_EXPORT void dsb_thread_exit(void* token) {
  auto* state = (PyGILState_STATE*)token;
  if (state == nullptr || finalizing()) return;
  PyEval_RestoreThread(PyGILState_GetThisThreadState());
  PyGILState_Release(*state);
  delete state;
}

DSB_EXPORT void* dsb_create(const char* config_json, char* err, int errlen) {
  Gil gil;
  PyObject* mod = PyImport_ImportModule("dawsep.plugin_backend");
  if (mod == nullptr) {
    bool missing = PyErr_ExceptionMatches(PyExc_ModuleNotFoundError);
    fetchError(err, errlen);
    if (missing && err != nullptr && std::strstr(err, "'dawsep") != nullptr) {
      PyObject* prefix = PySys_GetObject("prefix");  // borrowed
      const char* where = prefix ? PyUnicode_AsUTF8(prefix) : nullptr;
      if (where == nullptr) PyErr_Clear();
      char buf[1024];
      std::snprintf(buf, sizeof buf, "%s: install dawsep into %s", err, where ? where : "this Python");
      copyText(err, errlen, buf);
    }
    return nullptr;
  }
  PyObject* backend = PyObject_CallMethod(mod, "create", "s", config_json);
  Py_DECREF(mod);
  if (backend == nullptr) fetchError(err, errlen);
  return backend;
}

DSB_EXPORT int dsb_info(void* backend, double buffer_ms, char* out, int outlen, char* err, int errlen) {
  Gil gil;
  PyObject* ms = buffer_ms >= 0 ? PyFloat_FromDouble(buffer_ms) : (Py_INCREF(Py_None), Py_None);
  PyObject* r = PyObject_CallMethod((PyObject*)backend, "info", "N", ms);
  if (r == nullptr) {
    fetchError(err, errlen);
    return 1;
  }
  const char* text = PyUnicode_AsUTF8(r);
  if (text == nullptr) {
    fetchError(err, errlen);
    Py_DECREF(r);
    return 1;
  }
  copyText(out, outlen, text);
  Py_DECREF(r);
  return 0;
}

DSB_EXPORT int dsb_process(void* backend, const float* in, float* out, int n, int preset, int effects,
                           long long position, int at_or_before, char* err, int errlen) {
  Gil gil;
  // Zero-copy views of the worker's buffers; the backend keeps no reference past the call.
  PyObject* vin = PyMemoryView_FromMemory((char*)in, (Py_ssize_t)n * 2 * sizeof(float), PyBUF_READ);
  PyObject* vout = PyMemoryView_FromMemory((char*)out, (Py_ssize_t)n * 4 * sizeof(float), PyBUF_WRITE);
  PyObject* r = nullptr;
  if (vin != nullptr && vout != nullptr)
    r = PyObject_CallMethod((PyObject*)backend, "process_into", "OOiiiLi", vin, vout, n, preset, effects,
                            position, at_or_before);
  Py_XDECREF(vin);
  Py_XDECREF(vout);
  if (r == nullptr) {
    fetchError(err, errlen);
    return 1;
  }
  Py_DECREF(r);
  return 0;
}

DSB_EXPORT int dsb_reset(void* backend, char* err, int errlen) {
  Gil gil;
  PyObject* r = PyObject_CallMethod((PyObject*)backend, "reset", nullptr);
  if (r == nullptr) {
    fetchError(err, errlen);
    return 1;
  }
  Py_DECREF(r);
  return 0;
}

DSB_EXPORT void dsb_destroy(void* backend) {
  if (backend == nullptr || finalizing() || !Py_IsInitialized()) return;
  Gil gil;
  Py_DECREF((PyObject*)backend);
}
