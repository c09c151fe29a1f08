#include "Runtime.h"

#include <dlfcn.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <algorithm>
#include <map>
#include <vector>

namespace fs = std::filesystem;

namespace dawsep {

namespace {

std::string trim(const std::string& s) {
  auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return {};
  auto e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

// "key = value" lines; '#' starts a comment.
std::map<std::string, std::string> readKeyValues(const fs::path& path) {
  std::map<std::string, std::string> kv;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    auto hash = line.find('#');
    if (hash != std::string::npos) line = line.substr(0, hash);
    auto eq = line.find('=');
    if (eq == std::string::npos) continue;
    kv[trim(line.substr(0, eq))] = trim(line.substr(eq + 1));
  }
  return kv;
}

// The folder holding this shared object (Contents/<arch>-linux inside the bundle).
fs::path binaryDir() {
  Dl_info info{};
  if (dladdr((void*)&binaryDir, &info) == 0 || info.dli_fname == nullptr) return {};
  return fs::path(info.dli_fname).parent_path();
}

fs::path bundleDir() { return binaryDir().parent_path().parent_path(); }

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

std::string majorMinor(const std::string& version) {  // "3.11.7 (main, ...)" -> "3.11"
  auto dot = version.find('.');
  if (dot == std::string::npos) return {};
  auto end = version.find_first_not_of("0123456789", dot + 1);
  return version.substr(0, end == std::string::npos ? version.size() : end);
}

std::mutex logMutex;

// The loaded Python's own version (the bridge only knows the headers it was compiled with).
std::string runningVersion() {
  using GetVersion = const char* (*)();
  auto getVersion = reinterpret_cast<GetVersion>(dlsym(RTLD_DEFAULT, "Py_GetVersion"));
  std::string v = getVersion ? getVersion() : "?";
  return v.substr(0, v.find(' '));
}

Bridge gBridge;
std::atomic<bool> gReady{false};
bool gPythonHost = false;

std::string bridgesAvailable() {
  std::string names;
  std::error_code ec;
  for (auto& e : fs::directory_iterator(binaryDir(), ec)) {
    auto n = e.path().filename().string();
    if (n.rfind("dawsep-bridge-py", 0) == 0) {
      auto v = n.substr(16, n.size() - 16 - 3);
      names += (names.empty() ? "" : ", ") + v;
    }
  }
  return names.empty() ? "none" : names;
}

template <typename F>
bool sym(void* lib, const char* name, F& fn, std::string& message) {
  fn = reinterpret_cast<F>(dlsym(lib, name));
  if (fn == nullptr) message = std::string("the bridge lacks ") + name + " (a stale build? run make plugin)";
  return fn != nullptr;
}

bool loadBridge(const std::string& version, Status& status, std::string& message) {
  fs::path path = binaryDir() / ("dawsep-bridge-py" + version + ".so");
  if (!fs::exists(path)) {
    status = Status::versionMismatch;
    message = "Python " + version + " is running (or configured), but this plugin has bridges for Python " +
              bridgesAvailable() + " only: rebuild it with that Python (make plugin PYTHON=...) or "
              "point DAWSEP_PYTHON_ENV at an environment of a matching version";
    return false;
  }
  void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    status = Status::failed;
    message = std::string("cannot load the bridge: ") + dlerror();
    return false;
  }
  Bridge b;
  status = Status::failed;
#define DAWSEP_BRIDGE_LOAD(field, name) &&sym(lib, "dsb_" #name, b.field, message)
  if (!(true DAWSEP_BRIDGE_FUNCTIONS(DAWSEP_BRIDGE_LOAD))) return false;
#undef DAWSEP_BRIDGE_LOAD
  if (b.abi() != DSB_ABI) {
    message = "the bridge speaks ABI " + std::to_string(b.abi()) + ", the shell " + std::to_string(DSB_ABI) +
              " (a stale build? run make plugin)";
    return false;
  }
  if (majorMinor(b.pythonVersion()) != version) {
    status = Status::versionMismatch;
    message = "the bridge for " + version + " was built against Python " + b.pythonVersion();
    return false;
  }
  gBridge = b;
  return true;
}

// A host with Python already running (pedalboard, a Python DAW script host): reuse it.
bool attachToHostPython(Status& status, std::string& message, bool& attached) {
  using IsInit = int (*)();
  using GetVersion = const char* (*)();
  auto isInit = reinterpret_cast<IsInit>(dlsym(RTLD_DEFAULT, "Py_IsInitialized"));
  auto getVersion = reinterpret_cast<GetVersion>(dlsym(RTLD_DEFAULT, "Py_GetVersion"));
  attached = isInit != nullptr && getVersion != nullptr && isInit() != 0;
  if (!attached) return false;
  std::string version = majorMinor(getVersion());
  if (!loadBridge(version, status, message)) {
    message = "host Python: " + message;
    return false;
  }
  gPythonHost = true;
  return true;
}

// A host without Python: load the configured environment's libpython (RTLD_GLOBAL, so numpy's
// extension modules can resolve the C API) and start an interpreter whose program is that
// environment's python (so its site-packages, with dawsep, are on sys.path).
bool startOwnPython(const Config& cfg, Status& status, std::string& message) {
  status = Status::noEnvironment;
  if (cfg.pythonEnv.empty()) {
    message = "none configured: set DAWSEP_PYTHON_ENV to a venv with dawsep installed, or python_env in " +
              (bundleDir().parent_path() / "dawsep-plugin.conf").string();
    return false;
  }
  fs::path envDir = cfg.pythonEnv;
  // Short and first: a host shows 128 characters of a parameter's text.
  std::string where = cfg.pythonEnvFrom.rfind("DAWSEP_", 0) == 0 ? cfg.pythonEnvFrom + "=" + cfg.pythonEnv
                                                                 : cfg.pythonEnv + " (" + cfg.pythonEnvFrom + ")";
  if (!fs::is_directory(envDir)) {
    message = where + ": no such directory";
    return false;
  }
  fs::path program;
  for (auto name : {"bin/python3", "bin/python"})
    if (fs::exists(envDir / name)) {
      program = envDir / name;
      break;
    }
  if (program.empty()) {
    message = where + ": no bin/python3 in it (not a Python environment)";
    return false;
  }
  // Version and base installation: pyvenv.cfg for a venv, else the prefix itself.
  auto venv = readKeyValues(envDir / "pyvenv.cfg");
  std::string version = majorMinor(venv.count("version") ? venv["version"] : venv["version_info"]);
  std::vector<fs::path> libDirs{envDir / "lib"};
  if (venv.count("home")) {  // the base installation: its lib/ (and Debian's multiarch lib dir)
    fs::path base = fs::path(venv["home"]).parent_path() / "lib";
    libDirs.insert(libDirs.begin(), {base, base / "x86_64-linux-gnu"});
  }
  if (version.empty()) {  // a plain prefix: the version from its libpython's name
    std::error_code ec;
    for (auto& e : fs::directory_iterator(envDir / "lib", ec)) {
      auto n = e.path().filename().string();
      if (n.rfind("libpython3.", 0) == 0 && n.find(".so") != std::string::npos)
        version = majorMinor(n.substr(9));
    }
  }
  if (version.empty()) {
    message = where + ": cannot tell its Python version (no pyvenv.cfg, no lib/libpython3.*.so)";
    return false;
  }
  fs::path lib = cfg.libpython;
  if (lib.empty())
    for (auto& dir : libDirs)
      for (auto suffix : {".so.1.0", ".so"})
        if (lib.empty() && fs::exists(dir / ("libpython" + version + suffix))) lib = dir / ("libpython" + version + suffix);
  if (lib.empty()) lib = "libpython" + version + ".so.1.0";  // last resort: the loader's search path
  if (dlopen(lib.c_str(), RTLD_NOW | RTLD_GLOBAL) == nullptr) {
    std::string why = dlerror();
    if (lib.has_parent_path()) {
      status = Status::failed;
      message = "cannot load " + lib.string() + ": " + why;
    } else {
      message = where + ": found no libpython" + version + ".so (looked in " + libDirs.front().string() +
                "); the plugin needs a Python built as a shared library (pyenv: PYTHON_CONFIGURE_OPTS="
                "--enable-shared), or set libpython = /path/to/libpython" + version + ".so";
    }
    return false;
  }
  if (!loadBridge(version, status, message)) return false;
  char err[2048] = {0};
  if (gBridge.start(program.c_str(), err, sizeof err) != 0) {
    status = Status::failed;
    message = err;
    return false;
  }
  logLine("started Python " + runningVersion() + " from " + program.string());
  return true;
}

}  // namespace

std::mutex Runtime::mutex_;

Config Config::load() {
  Config c;
  std::map<std::string, std::string> kv;
  // Lowest precedence first: the build's defaults inside the bundle, then the user's file beside it.
  std::map<std::string, std::string> from;  // key -> the file that set it
  fs::path explicitConf = env("DAWSEP_PLUGIN_CONF");
  for (const fs::path& p : {bundleDir() / "Contents" / "Resources" / "dawsep-plugin.conf",
                            bundleDir().parent_path() / "dawsep-plugin.conf", explicitConf}) {
    if (p.empty() || !fs::exists(p)) continue;
    for (auto& [k, v] : readKeyValues(p)) kv[k] = v, from[k] = p.string();
  }
  std::string lastFrom;
  auto pick = [&](const char* var, const char* key) {
    std::string v = env(var);
    if (!v.empty()) {
      lastFrom = var;
      return v;
    }
    lastFrom = from.count(key) ? key + std::string(" in ") + from[key] : std::string();
    return kv.count(key) ? kv[key] : std::string();
  };
  c.pythonEnv = pick("DAWSEP_PYTHON_ENV", "python_env");
  c.pythonEnvFrom = lastFrom;
  c.libpython = pick("DAWSEP_LIBPYTHON", "libpython");
  c.model = pick("DAWSEP_PLUGIN_MODEL", "model");
  auto seg = pick("DAWSEP_PLUGIN_SEGMENT", "segment_seconds");
  auto buf = pick("DAWSEP_PLUGIN_BUFFER_MS", "buffer_ms");
  auto thr = pick("DAWSEP_PLUGIN_THREADS", "threads");
  c.segmentSeconds = seg.empty() ? 0.0 : seg == "model" ? -1.0 : std::atof(seg.c_str());
  c.bufferMs = buf.empty() ? -1.0 : std::atof(buf.c_str());
  c.threads = thr.empty() ? 1 : std::max(1, std::atoi(thr.c_str()));
  c.logFile = pick("DAWSEP_PLUGIN_LOG", "log");
  if (c.logFile.empty() && !env("HOME").empty()) c.logFile = env("HOME") + "/.cache/dawsep/plugin.log";
  c.statsFile = pick("DAWSEP_PLUGIN_STATS", "stats");
  auto offline = pick("DAWSEP_PLUGIN_OFFLINE", "offline");
  c.offline = offline == "1" || offline == "true" || offline == "yes" || offline == "on";
  auto timeline = pick("DAWSEP_PLUGIN_TIMELINE", "timeline");
  c.timeline = timeline == "input" ? Config::Timeline::input
               : timeline == "off" ? Config::Timeline::off : Config::Timeline::output;
  return c;
}

void logLine(const std::string& line) {
  std::lock_guard<std::mutex> lock(logMutex);
  std::fprintf(stderr, "dawsep-plugin: %s\n", line.c_str());
  std::fflush(stderr);
  auto file = Config::load().logFile;
  if (file.empty() || file == "-") return;
  std::error_code ec;
  fs::create_directories(fs::path(file).parent_path(), ec);
  std::ofstream out(file, std::ios::app);
  std::time_t now = std::time(nullptr);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", std::localtime(&now));
  out << stamp << " " << line << "\n";
}

const char* statusLabel(Status s) {
  switch (s) {
    case Status::starting: return "starting";
    case Status::running: return "running";
    case Status::noEnvironment: return "passthrough: no Python environment";
    case Status::versionMismatch: return "passthrough: Python version mismatch";
    case Status::failed: return "passthrough: error";
  }
  return "?";
}

bool Runtime::ensure(const Config& cfg, Status& status, std::string& message) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (gReady) return true;
  bool attached = false;
  if (attachToHostPython(status, message, attached) || (!attached && startOwnPython(cfg, status, message))) {
    gReady = true;
    status = Status::running;
    message.clear();
  }
  return gReady;
}

const Bridge& Runtime::bridge() { return gBridge; }
std::string Runtime::pythonVersion() { return runningVersion(); }
bool Runtime::pythonHost() { return gPythonHost; }

ScopedGilRelease::ScopedGilRelease() {
  if (gReady) token_ = gBridge.releaseGil();
}
ScopedGilRelease::~ScopedGilRelease() {
  if (token_ != nullptr) gBridge.restoreGil(token_);
}

}  // namespace dawsep
