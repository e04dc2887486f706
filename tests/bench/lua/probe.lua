-- A liveness probe, not a flood: one request every 10 ms per connection.
function delay() return 10 end
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")
