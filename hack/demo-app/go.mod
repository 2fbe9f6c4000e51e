module lockgate.dev/demo-app

go 1.22
