/* The top-up form, better with JavaScript (it works without: the server renders the summary for the
   choice the page was loaded with, and prices again on submit). Here the summary follows the driver's
   choice as it changes: the amount, the bonus, the method's fee and the total charged, from the numbers
   the server put in the page (data attributes: amounts, fixed_minor, rate_bp) with the server's
   rounding (shared/money.py basis_points: half up, in integers), and formatted as the server
   formats money. An error after a submit takes the focus, so that the keyboard and the screen
   reader start there. */
(function () {
  "use strict";
  var error = document.getElementById("form-error");
  if (error) {
    error.focus();
  }
  var form = document.getElementById("topup-form");
  if (!form || typeof BigInt !== "function") {
    return;
  }
  var data = form.dataset;
  var zero = BigInt(0);
  var exponent = Number(data.exponent);
  var min = BigInt(data.min);
  var max = BigInt(data.max);
  var step = BigInt(data.step);
  var format = formatLike(data.moneySample, data.moneySampleShort) || formatWithIntl();
  if (!format) {
    return;
  }

  /* Money formatted exactly as the server formats it (Babel, CLDR), learned from two amounts the
     server formatted: 1234567.891… and 1234 in the operator's currency (services/page/topup_form.py
     money_samples). Every digit is in a known place, so what is between them is the grouping and
     the decimal sign, and what is around them the currency. Null if the samples cannot be read. */
  function formatLike(sample, shortSample) {
    var digits = "1234567" + "891".slice(0, exponent);
    var first = sample ? sample.indexOf("1") : -1;
    var parts = [];
    var separators = [];
    var current = "";
    var separator = null;
    var next = 0;
    var position = first;
    if (first < 0 || !shortSample) {
      return null;
    }
    for (; next < digits.length && position < sample.length; position += 1) {
      var character = sample.charAt(position);
      if (character === digits.charAt(next)) {
        if (separator !== null) {
          parts.push(current);
          separators.push(separator);
          current = "";
          separator = null;
        }
        current += character;
        next += 1;
      } else {
        separator = (separator || "") + character;
      }
    }
    if (next < digits.length) {
      return null;
    }
    parts.push(current);
    var prefix = sample.slice(0, first);
    var suffix = sample.slice(position);
    var decimal = exponent > 0 ? separators.pop() : "";
    if (exponent > 0 && parts.pop() !== digits.slice(7)) {
      return null;
    }
    var group = separators.length ? separators[0] : "";
    var primary = parts.length > 1 ? parts[parts.length - 1].length : 0;
    var secondary = parts.length > 2 ? parts[parts.length - 2].length : primary;
    /* Some locales leave four-digit amounts ungrouped (1234,00 but 12 345,00). */
    var minimumGrouping = primary && shortSample.indexOf("1234") >= 0 ? 2 : 1;
    return function (minor) {
      var text = minor.toString();
      while (text.length <= exponent) {
        text = "0" + text;
      }
      var integer = exponent ? text.slice(0, -exponent) : text;
      var grouped = integer;
      if (primary && integer.length >= primary + minimumGrouping) {
        grouped = integer.slice(-primary);
        var rest = integer.slice(0, -primary);
        while (rest.length > secondary) {
          grouped = rest.slice(-secondary) + group + grouped;
          rest = rest.slice(0, -secondary);
        }
        grouped = rest + group + grouped;
      }
      return prefix + grouped + (exponent ? decimal + text.slice(-exponent) : "") + suffix;
    };
  }

  /* The browser's own formatting (the same CLDR data, maybe another version of it): only if the
     server's samples could not be read. */
  function formatWithIntl() {
    try {
      var money = new Intl.NumberFormat(data.locale, {
        style: "currency",
        currency: data.currency,
        minimumFractionDigits: exponent,
        maximumFractionDigits: exponent
      });
      return function (minor) {
        return money.format(Number(minor) / Math.pow(10, exponent));
      };
    } catch (e) {
      return null;
    }
  }

  /* What the driver typed, in minor units, as the server reads it (services/page/domain.py
     parse_major_amount): a comma is a decimal point; null for anything else. */
  function parseAmount(text) {
    var match = /^\+?(\d*)(?:\.(\d*))?$/.exec(text.trim().replace(/,/g, "."));
    if (!match || (match[1] === "" && !match[2])) {
      return null;
    }
    var fraction = match[2] || "";
    if (fraction.length > exponent) {
      if (/[^0]/.test(fraction.slice(exponent))) {
        return null;
      }
      fraction = fraction.slice(0, exponent);
    }
    while (fraction.length < exponent) {
      fraction += "0";
    }
    return BigInt((match[1] || "0") + fraction);
  }

  function basisPoints(amount, rate) {
    return (amount * rate + BigInt(5000)) / BigInt(10000);
  }

  function checked(name) {
    return form.querySelector('input[name="' + name + '"]:checked');
  }

  /* The choice as the server would price it; null when it cannot be (no amount, or one refused). */
  function choice() {
    var chosen = checked("package_id");
    var method = checked("method");
    var amount;
    var bonus = zero;
    if (!method) {
      return null;
    }
    if (chosen && chosen.value) {
      amount = BigInt(chosen.closest("label").dataset.amount);
      bonus = BigInt(chosen.closest("label").dataset.bonus);
    } else {
      var field = document.getElementById("amount");
      amount = field ? parseAmount(field.value) : null;
      if (amount === null || amount < min || amount > max || amount % step !== zero) {
        return null;
      }
    }
    var fee = method.closest("label").dataset;
    var feeMinor = BigInt(fee.feeFixed) + basisPoints(amount, BigInt(fee.feeRate));
    return { amount: amount, bonus: bonus, fee: feeMinor, method: fee.label };
  }

  function show(id, text) {
    var element = document.getElementById(id);
    if (element) {
      element.textContent = text;
    }
  }

  function update() {
    var current = choice();
    document.getElementById("summary-values").hidden = !current;
    document.getElementById("summary-empty").hidden = !!current;
    if (!current) {
      return;
    }
    show("summary-for", data.forText.replace("{amount}", format(current.amount)).replace("{method}", current.method));
    show("summary-amount", format(current.amount));
    document.getElementById("summary-bonus-row").hidden = current.bonus === zero;
    show("summary-bonus", format(current.bonus));
    show("summary-fee", format(current.fee));
    show("summary-total", format(current.amount + current.fee));
    if (data.balance) {
      show("summary-balance-after", format(BigInt(data.balance) + current.amount + current.bonus));
    }
  }

  form.addEventListener("change", update);
  form.addEventListener("input", function (event) {
    if (event.target.id === "amount") {
      /* Typing an amount chooses it, as the driver means. */
      var custom = form.querySelector('input[name="package_id"][value=""]');
      if (custom) {
        custom.checked = true;
      }
    }
    update();
  });
})();
