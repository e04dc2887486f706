-- containerd: the OAuth2 password grant, POSTed on every token request (protocol.md §2).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.body = os.getenv("BENCH_FORM")
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")
