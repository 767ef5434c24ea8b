//! The demo's generated world: restaurants in the style of the E2E NLG data, their meaning
//! representations, descriptions in many phrasings (the pretraining corpus) and one canonical
//! phrasing (the data-to-text target), and the slot check E2E evaluations use.

use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};

const NAME_FIRST: [&str; 40] = [
    "Blue",
    "Golden",
    "Old",
    "Little",
    "Red",
    "Green",
    "Royal",
    "Silver",
    "Happy",
    "Black",
    "White",
    "Crooked",
    "Lazy",
    "Jolly",
    "Hungry",
    "Smiling",
    "Wandering",
    "Sleepy",
    "Brave",
    "Rusty",
    "Copper",
    "Velvet",
    "Crimson",
    "Hidden",
    "Lucky",
    "Merry",
    "Noble",
    "Quiet",
    "Rolling",
    "Scarlet",
    "Twisted",
    "Wild",
    "Winter",
    "Summer",
    "Autumn",
    "Northern",
    "Eastern",
    "Painted",
    "Laughing",
    "Dancing",
];
const NAME_SECOND: [&str; 40] = [
    "Eagle",
    "Mill",
    "Phoenix",
    "Wrestlers",
    "Punter",
    "Cricketers",
    "Plough",
    "Vaults",
    "Olive",
    "Lion",
    "Fox",
    "Swan",
    "Anchor",
    "Lantern",
    "Kettle",
    "Oak",
    "Harp",
    "Crown",
    "Bell",
    "Dragon",
    "Badger",
    "Heron",
    "Otter",
    "Falcon",
    "Barrel",
    "Compass",
    "Garden",
    "Orchard",
    "Meadow",
    "Bridge",
    "Lighthouse",
    "Ferry",
    "Windmill",
    "Spoon",
    "Teapot",
    "Pelican",
    "Stag",
    "Unicorn",
    "Sparrow",
    "Tortoise",
];
/// Places a restaurant can be near, as E2E names them.
const LANDMARKS: [&str; 24] = [
    "Café Rouge",
    "Burger King",
    "Raja Indian Cuisine",
    "the Portland Arms",
    "Crowne Plaza Hotel",
    "All Bar One",
    "Rainbow Vegetarian Café",
    "Clare Hall",
    "Express by Holiday Inn",
    "Café Brazil",
    "The Six Bells",
    "Avalon",
    "Yippee Noodle Bar",
    "Café Adriatic",
    "The Bakers",
    "Ranch",
    "The Sorrento",
    "Café Sicilia",
    "The Rice Boat",
    "Strada",
    "Zizzi",
    "Browns Cambridge",
    "Midsummer House",
    "the Haymarket",
];
pub const EAT_TYPES: [&str; 3] = ["pub", "restaurant", "coffee shop"];
pub const FOODS: [&str; 10] = [
    "Indian", "Italian", "French", "Chinese", "English", "Japanese", "Mexican", "Thai", "Greek",
    "Spanish",
];
const PRICES: [&str; 3] = ["cheap", "moderately priced", "expensive"];
const RATINGS: [&str; 5] = ["low", "average", "high", "1 out of 5", "5 out of 5"];
const AREAS: [&str; 2] = ["city centre", "riverside"];

/// Dishes and words of the free-text sentences that follow some pretraining descriptions,
/// so that the base model (and its tokenizer) sees more than the attributes.
const DISHES: [&str; 50] = [
    "curry",
    "pasta",
    "pizza",
    "noodles",
    "sushi",
    "soup",
    "steak",
    "burgers",
    "salad",
    "dumplings",
    "tacos",
    "risotto",
    "fish and chips",
    "pies",
    "omelettes",
    "paella",
    "lasagne",
    "ramen",
    "kebabs",
    "pancakes",
    "scones",
    "sandwiches",
    "cakes",
    "pastries",
    "stew",
    "roast beef",
    "tapas",
    "falafel",
    "spring rolls",
    "ice cream",
    "moussaka",
    "gnocchi",
    "tempura",
    "biryani",
    "croissants",
    "chowder",
    "goulash",
    "enchiladas",
    "dim sum",
    "crepes",
    "samosas",
    "meatballs",
    "ravioli",
    "souvlaki",
    "tiramisu",
    "cheesecake",
    "porridge",
    "waffles",
    "brownies",
    "lamb chops",
];
const PRAISE: [&str; 16] = [
    "delicious",
    "excellent",
    "tasty",
    "wonderful",
    "fresh",
    "generous",
    "superb",
    "lovely",
    "disappointing",
    "bland",
    "cold",
    "overpriced",
    "average",
    "decent",
    "homemade",
    "spicy",
];
const STAFF: [&str; 10] = [
    "friendly",
    "helpful",
    "polite",
    "slow",
    "cheerful",
    "busy",
    "attentive",
    "rude",
    "quick",
    "welcoming",
];
const TIMES: [&str; 8] = [
    "on weekends",
    "in the evening",
    "at lunchtime",
    "on Sunday mornings",
    "after work",
    "before the theatre",
    "during the summer",
    "late at night",
];

/// People and streets of the free-text sentences: a varied vocabulary for the tokenizer.
const PEOPLE: [&str; 60] = [
    "Alice",
    "Ben",
    "Clara",
    "Daniel",
    "Emma",
    "Felix",
    "Grace",
    "Henry",
    "Isla",
    "Jack",
    "Katie",
    "Liam",
    "Maria",
    "Noah",
    "Olivia",
    "Peter",
    "Rosa",
    "Samuel",
    "Tara",
    "Victor",
    "William",
    "Zoe",
    "Arthur",
    "Beatrice",
    "Charlie",
    "Dorothy",
    "Edward",
    "Florence",
    "George",
    "Harriet",
    "Ivan",
    "Julia",
    "Kenji",
    "Lucia",
    "Marco",
    "Nadia",
    "Oscar",
    "Priya",
    "Quentin",
    "Rachel",
    "Stefan",
    "Theo",
    "Ursula",
    "Valentina",
    "Wei",
    "Yusuf",
    "Amir",
    "Bianca",
    "Connor",
    "Deborah",
    "Elena",
    "Francesca",
    "Giorgos",
    "Hannah",
    "Ingrid",
    "Jamal",
    "Leila",
    "Mateo",
    "Niamh",
    "Patrick",
];
const ROLES: [&str; 6] = ["chef", "owner", "manager", "head cook", "landlord", "baker"];
const STREETS: [&str; 30] = [
    "Mill Road",
    "King Street",
    "Regent Street",
    "Bridge Street",
    "Market Hill",
    "Castle Hill",
    "Trinity Lane",
    "Jesus Lane",
    "Station Road",
    "Hills Road",
    "Newmarket Road",
    "Chesterton Road",
    "Green Street",
    "Sidney Street",
    "Magdalene Street",
    "Silver Street",
    "Queen's Road",
    "Lensfield Road",
    "Mortimer Road",
    "Victoria Avenue",
    "Harvey Road",
    "Panton Street",
    "Norfolk Street",
    "Tenison Road",
    "Thompson's Lane",
    "Portugal Place",
    "Fitzroy Street",
    "Eden Street",
    "Petty Cury",
    "Botolph Lane",
];
const FEATURES: [&str; 20] = [
    "a large garden",
    "a quiet terrace",
    "an open fire",
    "live music",
    "a view of the river",
    "outdoor seating",
    "a private dining room",
    "board games",
    "a piano",
    "wooden beams",
    "a children's menu",
    "vegetarian options",
    "free parking",
    "a long wine list",
    "local beers",
    "fresh flowers on every table",
    "a pool table",
    "big windows",
    "a sunny courtyard",
    "comfortable sofas",
];

const TOWNS: [&str; 40] = [
    "Norwich",
    "Ipswich",
    "Peterborough",
    "Bedford",
    "Ely",
    "Huntingdon",
    "Newmarket",
    "Saffron Walden",
    "Colchester",
    "Chelmsford",
    "Luton",
    "Oxford",
    "Reading",
    "Bristol",
    "Bath",
    "York",
    "Leeds",
    "Manchester",
    "Liverpool",
    "Birmingham",
    "Nottingham",
    "Leicester",
    "Sheffield",
    "Durham",
    "Newcastle",
    "Edinburgh",
    "Glasgow",
    "Cardiff",
    "Swansea",
    "Belfast",
    "Dublin",
    "Brighton",
    "Canterbury",
    "Dover",
    "Exeter",
    "Plymouth",
    "Truro",
    "Lincoln",
    "Hull",
    "Carlisle",
];
const GUESTS: [&str; 12] = [
    "students",
    "families",
    "tourists",
    "office workers",
    "cyclists",
    "walkers",
    "couples",
    "musicians",
    "football fans",
    "retired teachers",
    "nurses",
    "writers",
];

/// One restaurant: every E2E attribute, of which a meaning representation shows some.
#[derive(Clone, Debug)]
pub struct Restaurant {
    pub name: String,
    pub eat_type: &'static str,
    pub food: &'static str,
    pub price: &'static str,
    pub rating: &'static str,
    pub area: &'static str,
    pub family: bool,
    pub near: &'static str,
}

/// An E2E meaning representation: the name and the attributes the text must mention.
#[derive(Clone, Debug)]
pub struct Meaning {
    pub name: String,
    pub eat_type: Option<&'static str>,
    pub food: Option<&'static str>,
    pub price: Option<&'static str>,
    pub rating: Option<&'static str>,
    pub area: Option<&'static str>,
    pub family: Option<bool>,
    pub near: Option<&'static str>,
}

fn pick<T: Copy>(rng: &mut StdRng, values: &[T]) -> T {
    *values
        .choose(rng)
        .expect("the demo's value lists are not empty")
}

impl Restaurant {
    pub fn random(rng: &mut StdRng) -> Self {
        Self {
            name: format!("The {} {}", pick(rng, &NAME_FIRST), pick(rng, &NAME_SECOND)),
            eat_type: pick(rng, &EAT_TYPES),
            food: pick(rng, &FOODS),
            price: pick(rng, &PRICES),
            rating: pick(rng, &RATINGS),
            area: pick(rng, &AREAS),
            family: rng.random_bool(0.5),
            near: pick(rng, &LANDMARKS),
        }
    }

    /// A meaning representation of this restaurant showing each attribute with probability
    /// `share` (the name always), as E2E's show three to eight.
    pub fn meaning(&self, rng: &mut StdRng, share: f64) -> Meaning {
        let mut shown = [false; 7];
        shown.iter_mut().for_each(|s| *s = rng.random_bool(share));
        Meaning {
            name: self.name.clone(),
            eat_type: shown[0].then_some(self.eat_type),
            food: shown[1].then_some(self.food),
            price: shown[2].then_some(self.price),
            rating: shown[3].then_some(self.rating),
            area: shown[4].then_some(self.area),
            family: shown[5].then_some(self.family),
            near: shown[6].then_some(self.near),
        }
    }

    /// Every attribute.
    #[cfg(test)]
    pub fn full_meaning(&self) -> Meaning {
        Meaning {
            name: self.name.clone(),
            eat_type: Some(self.eat_type),
            food: Some(self.food),
            price: Some(self.price),
            rating: Some(self.rating),
            area: Some(self.area),
            family: Some(self.family),
            near: Some(self.near),
        }
    }
}

impl Meaning {
    /// The same restaurant with some of the shown attributes left out: what a second
    /// description of it might say.
    pub fn restated(&self, rng: &mut StdRng) -> Meaning {
        let mut keep = [false; 7];
        keep.iter_mut().for_each(|k| *k = rng.random_bool(0.8));
        Meaning {
            name: self.name.clone(),
            eat_type: self.eat_type.filter(|_| keep[0]),
            food: self.food.filter(|_| keep[1]),
            price: self.price.filter(|_| keep[2]),
            rating: self.rating.filter(|_| keep[3]),
            area: self.area.filter(|_| keep[4]),
            family: self.family.filter(|_| keep[5]),
            near: self.near.filter(|_| keep[6]),
        }
    }

    /// E2E's attributes, written `name: The Mill | type: pub | food: Italian | ...`: E2E's own
    /// `name[The Mill], eatType[pub]` puts no space before a value, and a byte-level BPE
    /// tokenizer then spells the value with other tokens than the descriptions use (`Greek`
    /// against ` Greek`), so that a small base model cannot copy it.
    pub fn notation(&self) -> String {
        let name = format!("name: {}", self.name);
        let values = self
            .shown()
            .map(|(attribute, value)| format!("{}: {value}", attribute.task_key()));
        std::iter::once(name)
            .chain(values)
            .collect::<Vec<_>>()
            .join(" | ")
    }

    /// The shown attributes in E2E's order, each with its value as every notation writes it
    /// (family friendly as [`yes_no`]).
    pub fn shown(&self) -> impl Iterator<Item = (Attribute, &'static str)> {
        [
            (Attribute::EatType, self.eat_type),
            (Attribute::Food, self.food),
            (Attribute::Price, self.price),
            (Attribute::Rating, self.rating),
            (Attribute::Area, self.area),
            (Attribute::Family, self.family.map(yes_no)),
            (Attribute::Near, self.near),
        ]
        .into_iter()
        .filter_map(|(attribute, value)| Some((attribute, value?)))
    }

    /// The one phrasing the data-to-text task trains towards: every shown attribute, in a
    /// fixed order, so that a small model can learn it from a few hundred examples.
    pub fn canonical_text(&self) -> String {
        let eat = self.eat_type.unwrap_or("place");
        let price = self.price.map_or(String::new(), |p| format!("{p} "));
        let mut text = format!("{} is {} {price}{eat}", self.name, article(&price, eat));
        if let Some(food) = self.food {
            text += &format!(" serving {food} food");
        }
        match (self.area, self.near) {
            (Some(area), Some(near)) => text += &format!(" in the {area} near {near}"),
            (Some(area), None) => text += &format!(" in the {area}"),
            (None, Some(near)) => text += &format!(" near {near}"),
            (None, None) => {}
        }
        text.push('.');
        if let Some(rating) = self.rating {
            text += &format!(" It has {} {rating} customer rating.", article(rating, ""));
        }
        if let Some(family) = self.family {
            text += &format!(" It is {}.", family_phrase(family));
        }
        text
    }

    /// One of many phrasings, clauses in a random order: the pretraining corpus.
    pub fn varied_text(&self, rng: &mut StdRng) -> String {
        let eat = self.eat_type.unwrap_or("place");
        let price = self.price.map_or(String::new(), |p| format!("{p} "));
        let name = &self.name;
        let mut sentences = vec![match (rng.random_range(0..4), self.food) {
            (0, Some(food)) => format!("{name} is {} {price}{food} {eat}.", article(&price, food)),
            (1, Some(food)) => {
                let a = article(&price, eat);
                format!("There is {a} {price}{eat} called {name} that serves {food} food.")
            }
            (2, Some(food)) => {
                let a = article(&price, eat);
                format!("{name} serves {food} food. It is {a} {price}{eat}.")
            }
            (_, Some(food)) => {
                let a = article(&price, eat);
                format!("{name} is {a} {price}{eat} serving {food} food.")
            }
            (_, None) => format!("{name} is {} {price}{eat}.", article(&price, eat)),
        }];
        let mut clauses = Vec::new();
        match (self.area, self.near) {
            (Some(area), Some(near)) => clauses.push(match rng.random_range(0..3) {
                0 => format!("It is in the {area} near {near}."),
                1 => format!("You can find it in the {area}, close to {near}."),
                _ => format!("It is located near {near} in the {area}."),
            }),
            (Some(area), None) => clauses.push(match rng.random_range(0..2) {
                0 => format!("It is in the {area}."),
                _ => format!("It is located in the {area}."),
            }),
            (None, Some(near)) => clauses.push(format!("It is near {near}.")),
            (None, None) => {}
        }
        if let Some(rating) = self.rating {
            clauses.push(match rng.random_range(0..3) {
                0 => format!("It has {} {rating} customer rating.", article(rating, "")),
                1 => format!("Customers rate it {rating}."),
                _ => format!("Its customer rating is {rating}."),
            });
        }
        if let Some(family) = self.family {
            clauses.push(match (rng.random_range(0..2), family) {
                (0, _) => format!("It is {}.", family_phrase(family)),
                (_, true) => "Children are welcome.".to_string(),
                (_, false) => "Children are not welcome.".to_string(),
            });
        }
        clauses.shuffle(rng);
        // Descriptions name their subject again now and then, as people write them: text in
        // which the model must repeat a name it has just read.
        for clause in &mut clauses {
            if let Some(rest) = clause.strip_prefix("It ")
                && rng.random_bool(0.4)
            {
                *clause = format!("{name} {rest}");
            }
        }
        sentences.extend(clauses);
        if rng.random_bool(0.4) {
            sentences.push(review_sentence(rng, self.food));
        }
        sentences.join(" ")
    }

    /// A guide's entry for the restaurant, in one of two notations other than the
    /// data-to-text task's: the pretraining corpus follows it with a description, so the base
    /// model learns to write out values it has read in a list (which prompts then steer it to
    /// do from the task's own notation).
    pub fn guide_entry(&self, rng: &mut StdRng) -> String {
        let shown = self.shown();
        if rng.random_bool(0.5) {
            let entries: Vec<String> = shown
                .map(|(attribute, value)| format!("{} = {value}.", attribute.guide_key()))
                .collect();
            format!("Guide entry: {}. {}", self.name, entries.join(" "))
        } else {
            let values: Vec<&str> = shown.map(|(_, value)| value).collect();
            format!("{} ({})", self.name, values.join("; "))
        }
    }

    /// Questions about the shown attributes, each answered by its value: a reader's check of
    /// what the description said, in other words than the demo's classification tasks use.
    pub fn questions(&self, rng: &mut StdRng, how_many: usize) -> Vec<String> {
        let name = &self.name;
        let mut asked: Vec<String> = [
            self.food
                .map(|food| format!("Q: What food does {name} serve? A: {food}.")),
            self.area
                .map(|area| format!("Q: Where is {name}? A: In the {area}.")),
            self.family
                .map(|family| format!("Q: Is {name} good for children? A: {}.", yes_no(family))),
            self.price
                .map(|price| format!("Q: How expensive is {name}? A: It is {price}.")),
            self.rating
                .map(|rating| format!("Q: How do customers rate {name}? A: {rating}.")),
            self.near
                .map(|near| format!("Q: What is {name} near? A: {near}.")),
            self.eat_type
                .map(|eat| format!("Q: What kind of place is {name}? A: A {eat}.")),
        ]
        .into_iter()
        .flatten()
        .collect();
        asked.shuffle(rng);
        asked.truncate(how_many);
        asked
    }

    /// The shown attribute values, each with the phrases that mention it: E2E's slot check.
    fn slots(&self) -> Vec<Slot> {
        let values = self.shown().map(|(attribute, value)| match attribute {
            // Said in words ("family friendly", "not family friendly"), never as yes/no.
            Attribute::Family => Slot::FamilyFriendly(value == yes_no(true)),
            _ => Slot::mentions(value),
        });
        std::iter::once(Slot::mentions(&self.name))
            .chain(values)
            .collect()
    }

    /// How many of the shown attribute values `text` mentions, of how many.
    pub fn slots_realised(&self, text: &str) -> (usize, usize) {
        let slots = self.slots();
        let found = slots.iter().filter(|slot| slot.realised_in(text)).count();
        (found, slots.len())
    }
}

/// One of E2E's attributes (besides the name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attribute {
    EatType,
    Food,
    Price,
    Rating,
    Area,
    Family,
    Near,
}

impl Attribute {
    /// Its key in the data-to-text task's notation (`food: Italian`).
    fn task_key(self) -> &'static str {
        match self {
            Attribute::EatType => "type",
            Attribute::Food => "food",
            Attribute::Price => "price",
            Attribute::Rating => "rating",
            Attribute::Area => "area",
            Attribute::Family => "family friendly",
            Attribute::Near => "near",
        }
    }

    /// Its key in a guide's entry (`Food = Italian.`).
    fn guide_key(self) -> &'static str {
        match self {
            Attribute::EatType => "Type",
            Attribute::Food => "Food",
            Attribute::Price => "Price",
            Attribute::Rating => "Rating",
            Attribute::Area => "Area",
            Attribute::Family => "Children",
            Attribute::Near => "Near",
        }
    }
}

/// How every notation and answer states a yes/no attribute such as family friendly.
pub fn yes_no(flag: bool) -> &'static str {
    if flag { "yes" } else { "no" }
}

/// `a` or `an` before `first` (or, where it is empty, `then`).
fn article(first: &str, then: &str) -> &'static str {
    let next = if first.is_empty() { then } else { first };
    match next.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u' | 'A' | 'E' | 'I' | 'O' | 'U') => "an",
        _ => "a",
    }
}

fn family_phrase(family: bool) -> &'static str {
    if family {
        "family friendly"
    } else {
        "not family friendly"
    }
}

fn review_sentence(rng: &mut StdRng, food: Option<&str>) -> String {
    let dish = pick(rng, &DISHES);
    match rng.random_range(0..11) {
        8 => format!(
            "It opened in {} and is popular with {}.",
            rng.random_range(1950..2021),
            pick(rng, &GUESTS)
        ),
        9 => format!(
            "{} came all the way from {} for the {dish}.",
            pick(rng, &PEOPLE),
            pick(rng, &TOWNS)
        ),
        10 => format!(
            "It is open from {} in the morning until {} at night.",
            rng.random_range(6..12),
            rng.random_range(8..12)
        ),
        5 => format!(
            "The {} is {} and makes the {dish} every morning.",
            pick(rng, &ROLES),
            pick(rng, &PEOPLE)
        ),
        6 => format!(
            "You will find it on {}, with {}.",
            pick(rng, &STREETS),
            pick(rng, &FEATURES)
        ),
        7 => format!(
            "{} says the {dish} is {}.",
            pick(rng, &PEOPLE),
            pick(rng, &PRAISE)
        ),
        0 => format!("The {dish} is {}.", pick(rng, &PRAISE)),
        1 => format!(
            "The staff are {} and the {dish} is {}.",
            pick(rng, &STAFF),
            pick(rng, &PRAISE)
        ),
        2 => format!("It gets busy {}.", pick(rng, &TIMES)),
        3 => match food {
            Some(food) => format!("Try the {food} {dish} {}.", pick(rng, &TIMES)),
            None => format!("Try the {dish} {}.", pick(rng, &TIMES)),
        },
        _ => format!(
            "Visitors say the {dish} is {} and the staff are {}.",
            pick(rng, &PRAISE),
            pick(rng, &STAFF)
        ),
    }
}

/// One attribute value to look for in a generated text.
enum Slot {
    /// The value is mentioned as written.
    Mention(String),
    /// `family friendly` or `not family friendly` (children welcome or not), whichever is true.
    FamilyFriendly(bool),
}

impl Slot {
    fn mentions(value: &str) -> Self {
        Slot::Mention(value.to_lowercase())
    }

    fn realised_in(&self, text: &str) -> bool {
        let text = text.to_lowercase();
        match self {
            Slot::Mention(value) => text.contains(value.as_str()),
            Slot::FamilyFriendly(true) => {
                (text.contains(" family friendly") && !text.contains("not family friendly"))
                    || (text.contains("children are welcome"))
            }
            Slot::FamilyFriendly(false) => {
                text.contains("not family friendly") || text.contains("children are not welcome")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn guide_entries_and_questions_state_only_the_shown_values() {
        let mut rng = StdRng::seed_from_u64(5);
        for _ in 0..200 {
            let restaurant = Restaurant::random(&mut rng);
            let meaning = restaurant.meaning(&mut rng, 0.5);
            let entry = meaning.guide_entry(&mut rng);
            assert!(entry.contains(&meaning.name), "{entry}");
            // A hidden food is left out (a landmark such as Raja Indian Cuisine may still
            // name a cuisine).
            let landmark_names_it = meaning.near.is_some_and(|n| n.contains(restaurant.food));
            if meaning.food.is_none() && !landmark_names_it {
                assert!(!entry.contains(restaurant.food), "{entry}");
            }
            let (found, of) = meaning.slots_realised(&entry);
            let family_shown = usize::from(meaning.family.is_some());
            assert_eq!(
                found + family_shown,
                of,
                "every value but yes/no is named: {entry}"
            );

            let questions = meaning.questions(&mut rng, 3);
            assert!(questions.len() <= 3);
            for question in &questions {
                let answer = question.split(" A: ").nth(1).expect("answered");
                let answer = answer.trim_end_matches('.').to_lowercase();
                assert!(
                    meaning
                        .shown()
                        .any(|(_, value)| answer.ends_with(&value.to_lowercase())),
                    "{question}"
                );
            }
        }
        let name_only = Restaurant::random(&mut rng).meaning(&mut rng, 0.0);
        assert!(name_only.questions(&mut rng, 3).is_empty());
    }

    #[test]
    fn the_canonical_text_realises_every_slot_and_a_wrong_text_does_not() {
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..200 {
            let meaning = Restaurant::random(&mut rng).meaning(&mut rng, 0.7);
            let (found, of) = meaning.slots_realised(&meaning.canonical_text());
            assert_eq!(found, of, "{}", meaning.canonical_text());
            let (found, _) = meaning.slots_realised(&meaning.varied_text(&mut rng));
            assert_eq!(found, of, "a varied text names every shown value too");
        }
        let meaning = Restaurant::random(&mut rng).full_meaning();
        let flipped = Meaning {
            family: meaning.family.map(|f| !f),
            ..meaning.clone()
        };
        let (found, of) = meaning.slots_realised(&flipped.canonical_text());
        assert_eq!((found, of), (7, 8), "only the family slot is wrong");
        assert_eq!(meaning.slots_realised("The food is nice."), (0, 8));
    }
}
