-- wrk script: client_credentials with client_secret_basic (AUTH is base64 of id:secret).
wrk.method = "POST"
wrk.body = "grant_type=client_credentials"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic " .. os.getenv("AUTH")
