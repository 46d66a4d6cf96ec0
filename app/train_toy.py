"""`python -m app.train_toy`: trains the bundled toy-shapes CLIP (see app/toy/train_clip.py)."""
from app.toy.train_clip import main

if __name__ == "__main__":
    main()
