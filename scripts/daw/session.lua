-- make daw-test, step 1 (ardour7-lua): a new Ardour session with one stereo track running the
-- dawsep VST3, its Effects off (the raw stem, what `dawsep separate` writes), its panner
-- bypassed (channels pass straight through), on Ardour's "None (Dummy)" engine (no sound card).
-- Environment: DAW_SESSION_DIR, DAW_SESSION_NAME, DAW_SAMPLE_RATE, DAW_PRESET_INDEX (0 = piano).
local dir = assert(os.getenv("DAW_SESSION_DIR"), "DAW_SESSION_DIR")
local name = assert(os.getenv("DAW_SESSION_NAME"), "DAW_SESSION_NAME")
local rate = tonumber(os.getenv("DAW_SAMPLE_RATE") or "44100")
local preset = tonumber(os.getenv("DAW_PRESET_INDEX") or "0")
local DAWSEP_UID = "ABCDEF019182FAEB4477737044736570" -- the bundle's VST3 class id (moduleinfo)
local N_PRESETS = 5 -- piano, bass, drums, guitar, other (dawsep.plugin_backend.PRESETS)

assert(AudioEngine:set_backend("None (Dummy)", "", ""), "no Dummy backend: set hide-dummy-backend to 0")
assert(AudioEngine:start(false) == 0, "the Dummy engine did not start")
assert(create_session(dir, name, rate), "create_session failed")

local track = Session:new_audio_track(2, 2, nil, 1, "song", ARDOUR.PresentationInfo.max_order,
                                      ARDOUR.TrackMode.Normal, true):front()
-- listing the plugins is what makes a headless Ardour read its plugin cache (new_plugin alone does not)
local indexed = false
for p in ARDOUR.LuaAPI.list_plugins():iter() do
  if p.type == ARDOUR.PluginType.VST3 and p.unique_id == DAWSEP_UID then indexed = true end
end
assert(indexed, "dawsep VST3 not indexed: run ardour-vst3-scanner on the bundle (docs/plugin.md)")
local proc = ARDOUR.LuaAPI.new_plugin(Session, DAWSEP_UID, ARDOUR.PluginType.VST3, "")
assert(not proc:isnil(), "dawsep VST3 did not load")
assert(track:add_processor_by_index(proc, 0, nil, true) == 0, "could not add the plugin to the track")

-- VST3 parameters are normalised 0..1 in Ardour: Preset is a 5-step choice, Effects a toggle
local function param(label)
  local plugin = proc:to_insert():plugin(0)
  for i = 0, plugin:parameter_count() - 1 do
    if plugin:parameter_label(i) == label then return i end
  end
  error("no parameter " .. label)
end
assert(ARDOUR.LuaAPI.set_processor_param(proc, param("Preset"), preset / (N_PRESETS - 1)))
assert(ARDOUR.LuaAPI.set_processor_param(proc, param("Effects"), 0))
track:panner_shell():set_bypassed(true)

print(string.format("daw-test: session %s/%s, plugin latency %d samples, status: %s", dir, name,
                    proc:signal_latency(), ARDOUR.LuaAPI.get_processor_param(proc, param("Status"))))
Session:save_state("", false, false, false, false, false)
close_session()
