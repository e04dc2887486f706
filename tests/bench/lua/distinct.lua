-- Distinct credentials on every request: line i of BENCH_AUTH_FILE is base64 of user-i:password.
-- Each wrk thread walks its own slice, so no credential is sent twice in a run.
local threads = 0
function setup(thread)
  thread:set("first", threads)
  threads = threads + 1
end
local headers = {}
local index = 0
function init(args)
  for line in io.lines(os.getenv("BENCH_AUTH_FILE")) do headers[#headers + 1] = line end
  index = first * 2500  -- two threads at most: 2500 credentials apart
end
function request()
  index = index + 1
  local auth = "Basic " .. headers[(index % #headers) + 1]
  return wrk.format("GET", nil, {["Authorization"] = auth})
end
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")
