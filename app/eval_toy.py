"""`python -m app.eval_toy`: measures the bundled toy-shapes CLIP (see app/toy/evaluate.py)."""
from app.toy.evaluate import main

if __name__ == "__main__":
    main()
