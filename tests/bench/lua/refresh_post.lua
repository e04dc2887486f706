-- docker once logged in: the OAuth2 refresh grant with its identity token (protocol.md §1-2).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.body = os.getenv("BENCH_FORM")
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")
