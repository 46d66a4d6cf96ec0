from app.bench.engine import main

main()
