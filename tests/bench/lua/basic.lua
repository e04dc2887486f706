-- The same Basic credentials on every request (BENCH_AUTH = base64 of user:password).
wrk.headers["Authorization"] = "Basic " .. os.getenv("BENCH_AUTH")
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")
