"""Seeded procedural stories for the bundled demo.

Each story introduces two or three characters, each owning one object of one colour
("Mia has a red ball."), then refers back to them ("Mia throws the red ball.",
"The red ball belongs to Mia."). Predicting a later colour needs the owner's colour from the
introduction, predicting a later object needs the object seen next to that colour, and the owner
after "belongs to" needs the name bound to the object: copying and tracking, done by attention.
The fixed sentence frames are grammar, learnable from the current token alone (MLP).
"""

import random
from dataclasses import dataclass

NAMES = ("Mia", "Tom", "Ann", "Ben", "Lily", "Sam", "Zoe", "Max", "Eva", "Leo", "Ivy", "Jack")
OBJECTS = ("ball", "kite", "hat", "cup", "book", "box", "drum", "bike", "boat", "doll", "bag", "car")
COLOURS = ("red", "blue", "green", "yellow", "pink", "black", "white", "brown")
VERBS = ("sees", "likes", "holds", "finds", "drops", "washes", "throws", "hides", "paints", "takes")
PLACES = ("park", "garden", "beach", "school", "shop", "house")

EOS = "<|endoftext|>"

# Canonical prompts for the product's first graphs. Each ends where the next word must be copied
# from the introduction: a colour bound to a name, an object bound to a colour, a name bound to
# an object.
DEMO_PROMPTS: tuple[str, ...] = (
    "Mia has a red ball. Tom has a blue kite. Tom finds the blue kite. Mia throws the red",
    "Ann has a green hat. Ben has a yellow cup. Ann and Ben go to the park. Ben likes the yellow",
    "Lily has a pink boat. Sam has a black drum. Zoe has a white book. The black drum belongs to",
    "Max has a brown bag. Eva has a blue bike. Max holds the brown bag. Eva takes the",
)


@dataclass(frozen=True)
class Character:
    """A character and the one object it owns."""

    name: str
    colour: str
    obj: str


@dataclass(frozen=True)
class Story:
    """A story's text and the facts it was generated from (for checks)."""

    text: str
    characters: tuple[Character, ...]


def _intro(c: Character) -> str:
    return f"{c.name} has a {c.colour} {c.obj}."


def _event(rng: random.Random, chars: tuple[Character, ...]) -> str:
    c = rng.choice(chars)
    other = rng.choice([o for o in chars if o is not c])
    kind = rng.randrange(4)
    if kind == 0:
        return f"The {c.colour} {c.obj} belongs to {c.name}."
    if kind == 1:
        return f"{c.name} shows the {c.colour} {c.obj} to {other.name}."
    return f"{c.name} {rng.choice(VERBS)} the {c.colour} {c.obj}."


def generate_story(rng: random.Random) -> Story:
    """One story; all randomness comes from `rng`."""
    n_chars = rng.choice((2, 3))
    names = rng.sample(NAMES, n_chars)
    objs = rng.sample(OBJECTS, n_chars)
    colours = rng.sample(COLOURS, n_chars)
    chars = tuple(Character(n, c, o) for n, c, o in zip(names, colours, objs, strict=True))
    sentences = [_intro(c) for c in chars]
    if rng.random() < 0.5:
        a, b = rng.sample(chars, 2)
        sentences.append(f"{a.name} and {b.name} go to the {rng.choice(PLACES)}.")
    sentences += [_event(rng, chars) for _ in range(rng.randint(3, 6))]
    sentences.append("The end.")
    return Story(text=" ".join(sentences), characters=chars)


def generate_stories(seed: int, n: int) -> list[Story]:
    """`n` stories, a deterministic function of `seed`."""
    rng = random.Random(seed)
    return [generate_story(rng) for _ in range(n)]


def corpus_text(stories: list[Story]) -> list[str]:
    """Story texts, each followed by the end-of-text token (documents joined as in LM pretraining)."""
    return [f"{s.text}{EOS}" for s in stories]
