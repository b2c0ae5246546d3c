"""SynthTalk's fixed sentence bank and voices, with the held-out split.

Sentences: per language, every sentence whose index is ``3 mod 4`` is held out; the rest are for training.
Voices: espeak-ng voice names (language voice ``+`` variant); the held-out voices (accents and variants) are never
used for training. Identities are split by construction in :mod:`fantasytalking.data.synthtalk.dataset`.
"""

from __future__ import annotations

__all__ = ["LANGUAGES", "LANGUAGE_WEIGHTS", "SENTENCES", "SPLITS", "VOICES", "sentences_for", "voices_for"]

SPLITS = ("train", "heldout")

SENTENCES: dict[str, tuple[str, ...]] = {
    "en": (
        "The quick brown fox jumps over the lazy dog.",
        "Please call me back when you have a moment.",
        "We walked along the beach until the sun went down.",
        "I think the meeting starts at half past nine.",
        "My grandmother baked bread every Sunday morning.",
        "Could you pass me the blue book on the table?",
        "The museum opens again after a long winter break.",
        "Nobody expected the match to end in a draw.",
        "She bought apples, pears and a bunch of bananas.",
        "Turn left at the bridge, then keep going straight.",
        "Every answer raises a few more questions.",
        "The train was late, so we missed the first act.",
        "He painted the fence white before the party.",
        "Music helps me focus when I work late at night.",
        "Open the window, it is getting warm in here.",
        "Maybe we should try the new cafe around the corner.",
        "The children laughed at the puppet show.",
        "A cold wind blew across the empty parking lot.",
        "Remember to water the plants while I am away.",
        "Our flight leaves early, so pack your bags tonight.",
        "Good morning, and welcome to the evening news.",
        "The old clock in the hall stopped at midnight.",
        "Bees buzz around the purple flowers in May.",
        "Thank you all for coming, it means a lot to me.",
        "I would rather walk than wait for the bus.",
        "The recipe needs two eggs and a cup of milk.",
        "Mountains look smaller from the window of a plane.",
        "Please speak slowly, my English is not perfect.",
        "We will meet again, I promise you that.",
        "Paper boats float for a while, then they sink.",
        "Bob baked a big batch of blueberry muffins.",
        "How about a walk by the river after lunch?",
    ),
    "de": (
        "Guten Morgen, wie geht es dir heute?",
        "Das Wetter ist heute wirklich schön.",
        "Ich trinke am liebsten schwarzen Kaffee.",
        "Wir fahren morgen mit dem Zug nach Berlin.",
        "Kannst du mir bitte das Salz geben?",
        "Der Hund spielt gern im großen Garten.",
        "Am Wochenende besuchen wir meine Eltern.",
        "Das Buch liegt auf dem Tisch im Wohnzimmer.",
        "Mein Bruder arbeitet in einer kleinen Bäckerei.",
        "Im Sommer schwimmen wir oft im See.",
        "Bitte mach das Fenster zu, es ist kalt.",
        "Die Musik war laut, aber sehr schön.",
    ),
    "es": (
        "Buenos días, ¿cómo estás hoy?",
        "Me gusta mucho caminar por la playa.",
        "Mañana vamos a visitar a mis abuelos.",
        "El perro duerme debajo de la mesa.",
        "¿Puedes abrir la ventana, por favor?",
        "La comida estaba muy rica anoche.",
        "Mi hermana estudia medicina en Madrid.",
        "Los niños juegan en el parque después de clase.",
        "Hace mucho calor en el verano.",
        "Vamos a cantar una canción juntos.",
        "El tren sale a las ocho de la mañana.",
        "Gracias por tu ayuda con la mudanza.",
    ),
}

LANGUAGES = tuple(SENTENCES)
#: How often each language is drawn (relative; English is what wav2vec2-base-960h was trained on).
LANGUAGE_WEIGHTS = {"en": 0.5, "de": 0.25, "es": 0.25}

VOICES: dict[str, dict[str, tuple[str, ...]]] = {
    "train": {
        "en": ("en-us", "en-us+f3", "en+m3", "en+f2", "en-gb-x-rp+m1", "en-us+f4", "en+m7"),
        "de": ("de", "de+f3", "de+m2"),
        "es": ("es", "es+f4", "es+m3"),
    },
    "heldout": {
        "en": ("en-GB-scotland+f5", "en-029+m4"),
        "de": ("de+f1",),
        "es": ("es+f1",),
    },
}


def _check_split(split: str) -> None:
    if split not in SPLITS:
        from fantasytalking.errors import InputError

        raise InputError(f"unknown SynthTalk split {split!r}; use one of {', '.join(SPLITS)}")


def sentences_for(split: str, language: str) -> list[tuple[int, str]]:
    """``[(sentence id, text)]`` of ``language`` in ``split`` (held out: index ``3 mod 4``)."""
    _check_split(split)
    want = 3 if split == "heldout" else None
    return [(i, s) for i, s in enumerate(SENTENCES[language]) if (i % 4 == 3) == (want is not None)]


def voices_for(split: str, language: str) -> tuple[str, ...]:
    """espeak-ng voice names of ``language`` in ``split``."""
    _check_split(split)
    return VOICES[split][language]
