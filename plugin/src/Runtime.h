// The shell's side of Python: configuration, logging, and loading the bridge (plus libpython
// when the host has none). Process-wide: one interpreter per process, started once, never
// finalised, shared by every plugin instance. No Python headers here: the shell has no
// link-time Python dependency; everything goes through the bridge's C ABI (dawsep_bridge.h).
#pragma once

#include <mutex>
#include <string>

#include "../bridge/dawsep_bridge.h"

namespace dawsep {

// Settings from the environment (DAWSEP_*), else from a conf file ("key = value" lines): the one
// named by DAWSEP_PLUGIN_CONF, else dawsep-plugin.conf beside the bundle, else the one inside it
// (Contents/Resources, written by the build).
struct Config {
  std::string pythonEnv;   // python_env / DAWSEP_PYTHON_ENV: a venv (or a Python prefix)
  std::string libpython;   // libpython / DAWSEP_LIBPYTHON: explicit libpythonX.Y.so path
  std::string model;       // model / DAWSEP_PLUGIN_MODEL: registry name or .onnx path
  double segmentSeconds = 0;  // segment_seconds / DAWSEP_PLUGIN_SEGMENT: model chunk (0: the plugin's
                              // default, dawsep.plugin_backend; -1 for "model": the model's own)
  double bufferMs = -1;    // buffer_ms / DAWSEP_PLUGIN_BUFFER_MS: worker buffer (-1: automatic)
  int threads = 1;         // threads / DAWSEP_PLUGIN_THREADS: ONNX Runtime threads
  std::string logFile;     // log / DAWSEP_PLUGIN_LOG (default ~/.cache/dawsep/plugin.log; "-": none)
  std::string statsFile;   // stats / DAWSEP_PLUGIN_STATS: JSON timing stats written on release
  // timeline / DAWSEP_PLUGIN_TIMELINE: what the host's play head position means. "output" (Ardour):
  // where the block's output is heard, its input lying the declared latency later on the
  // timeline; "input": where the block's input lies; "off": ignore it (chunks from the last reset).
  enum class Timeline { output, input, off } timeline = Timeline::output;
  // offline / DAWSEP_PLUGIN_OFFLINE (1/true/yes/on): always wait for the worker, as in a host's
  // non-real-time render, for hosts that bounce without saying so (Ardour 7.3's export runs its
  // plugins in real-time mode): exact bounces, but a blocked audio thread if used for playback.
  bool offline = false;
  std::string pythonEnvFrom;  // where python_env came from ("DAWSEP_PYTHON_ENV" or a conf path)

  static Config load();
};

void logLine(const std::string& line);  // stderr + the log file; never from the audio thread

enum class Status { starting = 0, running, noEnvironment, versionMismatch, failed };
const char* statusLabel(Status s);

// The bridge's entry points: (field here, dsb_<name> in the bridge, dsb_<name>_fn its type).
#define DAWSEP_BRIDGE_FUNCTIONS(X)                                                                  \
  X(abi, abi) X(pythonVersion, python_version) X(start, start) X(releaseGil, release_gil)           \
  X(restoreGil, restore_gil) X(threadEnter, thread_enter) X(threadExit, thread_exit) X(create, create) \
  X(info, info) X(process, process) X(reset, reset) X(destroy, destroy)

struct Bridge {
#define DAWSEP_BRIDGE_FIELD(field, name) dsb_##name##_fn field = nullptr;
  DAWSEP_BRIDGE_FUNCTIONS(DAWSEP_BRIDGE_FIELD)
#undef DAWSEP_BRIDGE_FIELD
};

class Runtime {
 public:
  // Python ready to call (loading it on first use); on failure the status and a message saying
  // what to fix. Retried on each call until it works, so fixing the setup needs no restart
  // unless a wrong libpython was already loaded.
  static bool ensure(const Config& cfg, Status& status, std::string& message);
  static const Bridge& bridge();
  static bool pythonHost();  // true when the host process brought its own Python
  static std::string pythonVersion();  // the running Python's, e.g. "3.11.7"

 private:
  static std::mutex mutex_;
};

// Releases the GIL for a scope if this thread holds it (a Python host that calls the plugin
// with the GIL held would otherwise deadlock while we wait for the worker).
class ScopedGilRelease {
 public:
  ScopedGilRelease();
  ~ScopedGilRelease();

 private:
  void* token_ = nullptr;
};

}  // namespace dawsep
